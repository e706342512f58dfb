"""What the budget's journal costs: ``try_acquire`` with the MongoDB journal against the same
budget with Redis alone, on the embedded stack (valkey-server, litemongo), one worker.

1. Admitted calls (journal: reserve, then the Lua script).
2. Refused calls (journal: reserve, the script, then release).
3. A rebuild after FLUSHALL with a full window (``INSTAGRAM_HOURLY_BUDGET`` calls journaled).

Run with ``.venv/bin/python -m benchmarks.budget``. Nothing here is asserted; the numbers go
into issue notes. litemongo is far slower than MongoDB per write, so the ratio here is an upper
bound for a nearby MongoDB.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from ig_refresh_dagster import settings
from ig_refresh_dagster.devstack.services import redis_url, start_valkey
from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster.stores.budget_journal import BudgetJournal
from ig_refresh_dagster.stores.mongo import litemongo_uri, open_client

CALLS = 200  # INSTAGRAM_HOURLY_BUDGET's default: a journal never holds much more than an hour
REPEATS = 3


def per_call_ms(run: Callable[[], object], calls: int, reset: Callable[[], None]) -> float:
    samples = []
    for _ in range(REPEATS):
        reset()
        started = time.perf_counter()
        for _ in range(calls):
            run()
        samples.append((time.perf_counter() - started) * 1000 / calls)
    return statistics.median(samples)


def budget(client: redis.Redis, journal: BudgetJournal | None, limit: int) -> HourlyBudget:
    return HourlyBudget(client, "bench", limit, journal=journal)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_valkey(log_path=Path(tmp) / "valkey.log")
        mongo = open_client(litemongo_uri(Path(tmp) / "mongo"))
        try:
            client = redis.Redis.from_url(redis_url(server))
            journal = BudgetJournal(mongo["bench"])

            def reset() -> None:
                client.flushall()
                mongo["bench"].drop_collection("InstagramBudgetJournal")
                journal.ensure_indexes()

            rows = []
            for label, limit in (("admitted", 10**9), ("refused", 0)):
                bare = per_call_ms(budget(client, None, limit).try_acquire, CALLS, reset)
                journaled = per_call_ms(budget(client, journal, limit).try_acquire, CALLS, reset)
                rows.append((label, bare, journaled))
            print(f"try_acquire, median of {REPEATS} x {CALLS} calls, one worker:")
            for label, bare, journaled in rows:
                print(
                    f"  {label:9s} Redis only {bare:6.3f} ms   with journal {journaled:6.3f} ms"
                    f"   ratio {journaled / bare:5.1f}x"
                )

            full = int(settings.default("INSTAGRAM_HOURLY_BUDGET") or CALLS)
            reset()
            rebuilt = budget(client, journal, full)
            for _ in range(full):
                rebuilt.try_acquire()
            samples = []
            for _ in range(REPEATS):
                client.flushall()
                started = time.perf_counter()
                rebuilt.status()  # the first decision after the loss rebuilds the window
                samples.append((time.perf_counter() - started) * 1000)
            print(
                f"rebuild after FLUSHALL with {full} journaled calls: "
                f"{statistics.median(samples):.1f} ms (median of {REPEATS})"
            )
        finally:
            mongo.close()
            server.stop()


if __name__ == "__main__":
    main()
