"""The fault-injection stack: a real ``dagster-daemon`` (sensors, queued coordinator, run
monitoring, run retries, run subprocesses) started as test_daemon_e2e.py does, against a broker,
a valkey-server and a litemongo store of its own (so a scenario can restart or cut them without
touching the rest of the suite), and an Instagram stand-in whose answers a scenario can hold
back, so refreshes are in flight when the fault hits.

Every scenario ends with ``FaultStack.assert_settled``: every refresh run has finished, each run
has exactly one DataRefreshLog entry, none is IN_PROGRESS, and every valid event's account ends
with exactly one COMPLETED entry, in its last run; an earlier run of it ended FAILED only where
Dagster retried it. Every wait is bounded; every process is stopped by process group.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from bson import ObjectId
from confluent_kafka.admin import AdminClient
from dagster import DagsterInstance, DagsterRun

from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.devstack.seed import demo_accounts
from ig_refresh_dagster.devstack.services import (
    ServiceProcess,
    kafka_bootstrap,
    redis_url,
    start_broker,
    start_valkey,
)
from ig_refresh_dagster.devstack.stack import EMBEDDED_BROKER_FETCH_WAIT_MS
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.refresh.run.refresh_runs import refresh_runs
from ig_refresh_dagster.stores.budget import HourlyBudget, graph_budget_name
from ig_refresh_dagster.stores.budget_journal import BudgetJournal
from ig_refresh_dagster.stores.cache import cache_key
from ig_refresh_dagster.stores.mongo import litemongo_uri, open_client
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.daemon_helpers import (
    daemon_env,
    dagster_home,
    launch_daemon,
)
from ig_refresh_dagster_tests.support.kafka_helpers import refresh_event
from ig_refresh_dagster_tests.support.store_faults import embedded_store_unreachable

TOKEN = "fault-token-do-not-log"
AUTO_RETRY_TAG = "dagster/auto_retry_run_id"
# Stand-in profiles that refresh without waiting, through Graph or scraping (JSON or HTML). Each
# can also be scraped: a Graph-only fixture reads as a gone profile when a Redis blip makes the
# fetcher skip Graph (its budget unreadable) and scrape instead, which is by design.
USERNAMES = ["acme.studio", "sam.outdoors", "lena.fotografie", "yuki.tokyo"]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 1.0) -> Any:
    """Polls ``predicate`` until it returns something truthy; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        time.sleep(step)


class GatedStandin(InstagramStandin):
    """The fixture stand-in, with a gate: while it is closed each request waits (at most
    ``hold_seconds``), so the runs that sent them are in flight."""

    def __init__(self, hold_seconds: float = 60.0) -> None:
        super().__init__(token=TOKEN)
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = 0
        self._hold = hold_seconds
        serve = self._app

        def gated(environ: dict, start_response: Callable) -> Any:
            with self._lock:
                self.waiting += 1
            try:
                self.gate.wait(self._hold)
            finally:
                with self._lock:
                    self.waiting -= 1
            return serve(environ, start_response)

        self._app = gated  # type: ignore[method-assign]


class FaultStack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = dagster_home(root)
        self.mongo_dir = root / "mongo"
        self.mongo_uri = litemongo_uri(self.mongo_dir)
        self.broker = start_broker(log_path=root / "broker.log")
        self.valkey = start_valkey(log_path=root / "valkey.log")
        self.topics = Topics(kafka_bootstrap(self.broker))
        self.topics.create(self.topics.refresh, 3)
        self.topics.create(self.topics.dlq, 1)
        self.standin = GatedStandin().start()
        self.client = open_client(self.mongo_uri)
        self.db = self.client["ratecreator"]
        self.daemon: ServiceProcess | None = None
        self.daemon_starts = 0
        self._instance: DagsterInstance | None = None

    # -- services -------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return redis_url(self.valkey)

    def env(self) -> dict[str, str]:
        return daemon_env(
            self.home,
            self.topics,
            self.redis_url,
            self.mongo_uri,
            self.standin,
            KAFKA_FETCH_WAIT_MAX_MS=EMBEDDED_BROKER_FETCH_WAIT_MS,
        )

    def start_daemon(self) -> None:
        self.instance()  # creates the SQLite storage first: two processes creating it race
        self.daemon_starts += 1
        self.daemon = launch_daemon(self.env(), self.root / f"daemon-{self.daemon_starts}.log")

    def backfill(self, account_ids: list[str]) -> str:
        """``ig-refresh backfill --ids …`` as an operator runs it; the backfill's id."""
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ig-refresh"), "backfill", "--ids", *account_ids],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.split("backfill ")[-1].split()[0]

    def kill_daemon(self) -> None:
        """SIGKILL to the daemon's whole process group: daemon, code servers, run workers."""
        assert self.daemon is not None
        self.daemon.kill()
        self.daemon = None

    def restart_broker(self, down_seconds: float = 0.0) -> None:
        """The memory-only broker restarts on the same port: every topic and offset is gone."""
        port = self.broker.port
        self.broker.stop()
        time.sleep(down_seconds)
        self.broker = start_broker(port=port, log_path=self.root / "broker.log")

    def stop_redis(self) -> None:
        self.valkey.stop()

    def start_redis(self) -> None:
        """valkey on the same port again, empty (it keeps nothing on disk)."""
        self.valkey = start_valkey(port=self.valkey.port, log_path=self.root / "valkey.log")

    @contextlib.contextmanager
    def mongo_unreachable(self) -> Iterator[None]:
        with embedded_store_unreachable(self.mongo_dir):
            yield

    def create_dlq(self) -> None:
        self.topics.create(self.topics.dlq, 1)

    def delete_dlq(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.topics.bootstrap})
        for future in admin.delete_topics([self.topics.dlq]).values():
            future.result(10)

    def daemon_log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("daemon-*")))

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        if self._instance is not None:
            self._instance.dispose()
        self.standin.gate.set()
        self.standin.stop()
        self.client.close()
        self.valkey.stop()
        self.broker.stop()

    # -- data -------------------------------------------------------------------------------

    def seed(self, count: int) -> list[str]:
        """``count`` Account documents over the stand-in's profiles; their ids."""
        ids = []
        for i in range(count):
            oid = ObjectId()
            self.db["Account"].insert_one(
                {"_id": oid, "platform": "INSTAGRAM", "handle": USERNAMES[i % len(USERNAMES)]}
            )
            ids.append(str(oid))
        return ids

    def seed_owned(self, count: int) -> list[str]:
        """``count`` Graph accounts with a cache entry and their owner's authorisation, so a
        refresh calls Redis (the cache) and the Graph budget again (insights) after its
        profile fetch."""
        owner = next(a for a in demo_accounts() if a.auth)
        cache = redis.Redis.from_url(self.redis_url)
        ids = []
        for _ in range(count):
            oid = ObjectId()
            cache_id = f"ig-{oid}"
            self.db["Account"].insert_one(
                {
                    "_id": oid,
                    "platform": "INSTAGRAM",
                    "handle": owner.username,
                    "accountId": cache_id,
                    "instagramAuth": owner.auth,
                }
            )
            entry = {"account": {"handle": owner.username, **owner.before}}
            cache.set(cache_key(cache_id), json.dumps(entry), ex=3600)
            ids.append(str(oid))
        cache.close()
        return ids

    def graph_budget(self) -> HourlyBudget:
        """The daemon's Graph budget for its one credential, read through its journal."""
        name = graph_budget_name(token_fingerprint(self.standin.token))
        client = redis.Redis.from_url(self.redis_url)
        return HourlyBudget(client, name, 200, journal=BudgetJournal(self.db))

    def publish(self, account_ids: list[str], extra: list[bytes] = ()) -> None:
        self.topics.publish([refresh_event(a) for a in account_ids] + list(extra))

    def instance(self) -> DagsterInstance:
        if self._instance is None:
            self._instance = DagsterInstance.from_config(str(self.home))
        return self._instance

    def runs(self) -> list[DagsterRun]:
        """Refresh runs of every launch path (sensor runs, backfills as ``__ASSET_JOB``)."""
        return refresh_runs(self.instance().get_runs())

    def entries(self) -> list[dict[str, Any]]:
        return list(self.db["DataRefreshLog"].find({}))

    def in_flight_at_gate(self, count: int) -> bool:
        return self.standin.waiting >= count

    # -- the guarantee ------------------------------------------------------------------------

    def settled_problems(self, accounts: list[str]) -> list[str]:
        """Everything that still breaks the guarantee (empty when it holds)."""
        runs = self.runs()
        entries = self.entries()
        problems = [f"run {r.run_id} is {r.status.value}" for r in runs if not r.is_finished]
        per_run = Counter(e["runId"] for e in entries)
        for run in runs:
            if per_run[run.run_id] != 1:
                problems.append(f"run {run.run_id} has {per_run[run.run_id]} entries")
        problems += [
            f"entry of {e['runId']} is IN_PROGRESS" for e in entries if e["status"] == "IN_PROGRESS"
        ]
        by_run = {e["runId"]: e for e in entries}
        for account in accounts:
            mine = sorted(
                (r for r in runs if r.tags.get("dagster/partition") == account),
                key=lambda r: self.instance().get_run_record_by_id(r.run_id).create_timestamp,
            )
            statuses = [by_run.get(r.run_id, {}).get("status") for r in mine]
            if statuses.count("COMPLETED") != 1 or statuses[-1:] != ["COMPLETED"]:
                problems.append(f"account {account}: entries {statuses}, want one COMPLETED last")
            for run in mine[:-1]:
                if AUTO_RETRY_TAG not in run.tags:
                    problems.append(f"account {account}: run {run.run_id} ended without a retry")
        return problems

    def wait_settled(self, accounts: list[str], timeout: float) -> float:
        """Seconds until the guarantee held (fails after ``timeout`` with what still breaks it)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            problems = self.settled_problems(accounts)
            if not problems:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                pytest.fail(f"not settled within {timeout:.0f}s: {problems[:10]}")
            time.sleep(2)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """One stack and one daemon for every scenario (starting them costs more than most
    scenarios); each scenario brings its own accounts and events."""
    built = FaultStack(tmp_path_factory.mktemp("faults"))
    try:
        built.start_daemon()
        yield built
    finally:
        built.close()
