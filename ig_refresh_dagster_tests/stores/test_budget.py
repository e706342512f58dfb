"""The hourly budget against a real valkey-server."""

from __future__ import annotations

import contextlib
import threading
import time

import pymongo
import pytest
import redis

from ig_refresh_dagster.devstack.services import ServiceProcess, free_port
from ig_refresh_dagster.instagram.errors import BudgetUnavailable
from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster.stores.budget_journal import COLLECTION as JOURNAL
from ig_refresh_dagster.stores.budget_journal import BudgetJournal
from ig_refresh_dagster.stores.mongo import open_client
from ig_refresh_dagster_tests.conftest import Valkeys


def test_admits_up_to_limit_then_reports_wait(redis_client: redis.Redis) -> None:
    budget = HourlyBudget(redis_client, "graph", limit_per_hour=3)
    assert [budget.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = budget.try_acquire()
    assert 3590 < wait <= 3600
    assert budget.status().used == 3


def test_window_slides_instead_of_resetting(redis_client: redis.Redis) -> None:
    budget = HourlyBudget(redis_client, "graph", limit_per_hour=2, window_seconds=1)
    assert budget.try_acquire() == 0.0
    assert budget.try_acquire() == 0.0
    wait = budget.try_acquire()
    assert 0 < wait <= 1.0


def test_concurrent_workers_never_exceed_the_limit(redis_url_for_test: str) -> None:
    """Eight threads with their own connections race for 50 slots: exactly 50 win."""
    admitted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        budget = HourlyBudget(redis.Redis.from_url(redis_url_for_test), "graph", 50)
        wins = sum(1 for _ in range(20) if budget.try_acquire() == 0.0)
        with lock:
            admitted.append(wins)

    redis.Redis.from_url(redis_url_for_test).flushall()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 50


def test_budgets_are_independent(redis_client: redis.Redis) -> None:
    graph = HourlyBudget(redis_client, "graph", 1)
    scrape = HourlyBudget(redis_client, "scrape", 1)
    assert graph.try_acquire() == 0.0
    assert graph.try_acquire() > 0
    assert scrape.try_acquire() == 0.0


def test_block_for_stops_admissions_and_never_shortens(redis_client: redis.Redis) -> None:
    budget = HourlyBudget(redis_client, "graph", 100)
    budget.block_for(600, "X-App-Usage 95%")
    budget.block_for(5, "shorter block must not win")
    wait = budget.try_acquire()
    assert 595 < wait <= 600
    status = budget.status()
    assert status.blocked_reason == "X-App-Usage 95%"
    assert status.used == 0


def test_zero_limit_admits_nothing(redis_client: redis.Redis) -> None:
    assert HourlyBudget(redis_client, "graph", 0).try_acquire() > 0


def test_unreachable_redis_fails_closed() -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    budget = HourlyBudget(dead, "graph", 200)
    with pytest.raises(BudgetUnavailable, match="refusing graph calls"):
        budget.try_acquire()


# -- the journal: the hourly promise survives Redis losing its memory -------------------------


@pytest.fixture
def journal(mongo_db) -> BudgetJournal:
    journal = BudgetJournal(mongo_db)
    journal.ensure_indexes()
    return journal


def admitted(budget: HourlyBudget, attempts: int) -> int:
    return sum(1 for _ in range(attempts) if budget.try_acquire() == 0.0)


def lose_memory(how: str, valkeys: Valkeys, server: ServiceProcess) -> ServiceProcess:
    """What a Redis without persistence goes through: a restart (a new, empty process on the
    same port, which the budget's client reconnects to) or a FLUSHALL."""
    if how == "restart":
        server = valkeys.restart(server)
    else:
        redis.Redis(port=server.port).flushall()
    assert redis.Redis(port=server.port).dbsize() == 0, "Redis kept nothing"
    return server


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_redis_losing_its_memory_mid_window_admits_no_more_than_the_limit(
    how: str, valkeys: Valkeys, journal: BudgetJournal
) -> None:
    server = valkeys.start()
    budget = HourlyBudget(redis.Redis(port=server.port), "graph", 5, journal=journal)
    assert admitted(budget, 3) == 3
    lose_memory(how, valkeys, server)
    assert admitted(budget, 10) == 2, "the window was rebuilt from the journal"
    assert budget.status().used == 5
    assert 3590 < budget.try_acquire() <= 3600 + 10


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_metas_requested_pause_survives_redis_losing_its_memory(
    how: str, valkeys: Valkeys, journal: BudgetJournal
) -> None:
    server = valkeys.start()
    budget = HourlyBudget(redis.Redis(port=server.port), "graph", 100, journal=journal)
    budget.block_for(600, "estimated_time_to_regain_access 10 min")
    lose_memory(how, valkeys, server)
    # A rebuilt pause may end up to the skew allowance (10 s) later, never earlier.
    assert 595 < budget.try_acquire() <= 610
    status = budget.status()
    assert status.blocked_reason == "estimated_time_to_regain_access 10 min"
    assert status.used == 0


def test_failover_to_a_lagging_replica_admits_no_more_than_the_limit(
    valkeys: Valkeys, journal: BudgetJournal
) -> None:
    """The replica saw the first two calls, not the next two (it was cut off, then promoted).
    Its copy of the window still carries the old epoch key, so only the changed replication id
    tells the budget that this server's window is not the one it built."""
    primary, replica = valkeys.start("--repl-diskless-sync-delay", "0"), valkeys.start()
    on_replica = redis.Redis(port=replica.port)
    on_replica.replicaof("127.0.0.1", primary.port)
    budget = HourlyBudget(redis.Redis(port=primary.port), "graph", 5, journal=journal)
    assert admitted(budget, 2) == 2
    deadline = time.monotonic() + 20
    while on_replica.zcard("ig-refresh:budget:graph:log") < 2:
        assert time.monotonic() < deadline, "the replica never caught up"
        time.sleep(0.05)
    on_replica.replicaof("NO", "ONE")
    assert admitted(budget, 2) == 2
    assert on_replica.zcard("ig-refresh:budget:graph:log") == 2, "the replica lags"

    failed_over = HourlyBudget(on_replica, "graph", 5, journal=journal)
    assert admitted(failed_over, 10) == 1
    assert failed_over.status().used == 5


def test_concurrent_workers_across_flushalls_never_exceed_the_limit(
    redis_url_for_test: str, mongo_uri: str, journal: BudgetJournal
) -> None:
    """Eight workers race for 50 slots while Redis is flushed three times under them: the
    rebuilt window never lets more than 50 through (a flush may cost a few slots: reservations
    in flight count until their workers decide). The ``journal`` fixture creates the store
    first: litemongo races on creating its directory when threads open it together."""
    admitted_calls: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(9, timeout=30)

    def worker() -> None:
        client = open_client(mongo_uri)  # litemongo's clients belong to one thread
        budget = HourlyBudget(
            redis.Redis.from_url(redis_url_for_test),
            "graph",
            50,
            journal=BudgetJournal(client["ratecreator"]),
        )
        start.wait()
        wins = 0
        for _ in range(20):
            # Flushes faster than a rebuild can finish end in a refusal (fail closed), which is
            # what the fetcher makes of BudgetUnavailable.
            with contextlib.suppress(BudgetUnavailable):
                wins += budget.try_acquire() == 0.0
        client.close()
        with lock:
            admitted_calls.append(wins)

    flusher = redis.Redis.from_url(redis_url_for_test)
    flusher.flushall()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    start.wait()
    for _ in range(3):
        time.sleep(0.05)
        flusher.flushall()
    for t in threads:
        t.join(60)
    assert 0 < sum(admitted_calls) <= 50


def test_refused_calls_leave_no_reservation_behind(journal: BudgetJournal, mongo_db, redis_client):
    budget = HourlyBudget(redis_client, "graph", 2, journal=journal)
    assert admitted(budget, 6) == 2
    assert mongo_db[JOURNAL].count_documents({"kind": "call"}) == 2


def test_rebuilt_window_still_slides(redis_client: redis.Redis, journal: BudgetJournal) -> None:
    budget = HourlyBudget(
        redis_client, "graph", 2, window_seconds=1, journal=journal, skew_allowance_seconds=0.2
    )
    assert admitted(budget, 2) == 2
    redis_client.flushall()
    wait = budget.try_acquire()
    assert 0 < wait <= 1.2
    time.sleep(wait + 0.05)
    assert budget.try_acquire() == 0.0


def test_a_worker_clock_far_behind_redis_is_refused(
    redis_client: redis.Redis, journal: BudgetJournal, mongo_db
) -> None:
    """Its journal entries would be dated too early, and a rebuilt window would let them leave
    early: fail closed, saying why, and leave no reservation behind."""
    behind = HourlyBudget(redis_client, "graph", 5, journal=journal, clock=lambda: time.time() - 60)
    with pytest.raises(BudgetUnavailable, match="clock is more than 10s behind"):
        behind.try_acquire()
    assert mongo_db[JOURNAL].count_documents({}) == 0


def test_unreachable_journal_fails_closed(redis_client: redis.Redis) -> None:
    """No durable record, no call: a journal that cannot be written refuses the call."""
    dead = BudgetJournal(
        pymongo.MongoClient(
            f"mongodb://127.0.0.1:{free_port()}", serverSelectionTimeoutMS=300, connect=False
        )["ratecreator"]
    )
    budget = HourlyBudget(redis_client, "graph", 5, journal=dead)
    with pytest.raises(BudgetUnavailable, match="journal unavailable, refusing graph calls"):
        budget.try_acquire()
    assert redis_client.zcard("ig-refresh:budget:graph:log") == 0, "nothing was charged"


def test_journal_expires_through_a_ttl_index(journal: BudgetJournal, mongo_db) -> None:
    (ttl,) = [
        ix for ix in mongo_db[JOURNAL].index_information().values() if "expireAfterSeconds" in ix
    ]
    assert ttl["key"] == [("expiresAt", 1)]
    assert ttl["expireAfterSeconds"] == 0


def test_a_journal_less_budget_never_hides_a_loss_from_the_journaled_one(
    redis_client: redis.Redis, journal: BudgetJournal
) -> None:
    """A reader without the journal (a status probe, a script) after a FLUSHALL must not mark
    the empty window as the current one."""
    budget = HourlyBudget(redis_client, "graph", 5, journal=journal)
    assert admitted(budget, 3) == 3
    redis_client.flushall()
    assert HourlyBudget(redis_client, "graph", 5).status().used == 0
    assert admitted(budget, 10) == 2


class _LosesMemoryAfterRead(BudgetJournal):
    """A journal whose first window read is followed, before the reader can install what it
    read, by another worker's rebuild and admissions and then another FLUSHALL: the
    interleaving that the concurrent test above hits only now and then, made certain."""

    def __init__(self, db, meanwhile) -> None:
        super().__init__(db)
        self._meanwhile = meanwhile

    def window(self, budget: str, now_ms: int, inherited: str | None = None):
        read = super().window(budget, now_ms, inherited)
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile:
            meanwhile()
        return read


def test_a_rebuild_read_before_a_newer_loss_is_never_installed(
    redis_client: redis.Redis, journal: BudgetJournal, mongo_db
) -> None:
    other = HourlyBudget(redis_client, "graph", 5, journal=journal)

    def another_worker_admits_then_redis_forgets_again() -> None:
        assert admitted(other, 2) == 2
        redis_client.flushall()

    slow = HourlyBudget(
        redis_client,
        "graph",
        5,
        journal=_LosesMemoryAfterRead(mongo_db, another_worker_admits_then_redis_forgets_again),
    )
    assert admitted(other, 1) == 1
    redis_client.flushall()
    assert admitted(slow, 10) == 2, "1 + 2 admitted before, so only 2 remain"
    assert slow.status().used == 5


def test_a_rebuilder_whose_clock_runs_ahead_still_restores_the_whole_window(
    redis_client: redis.Redis, journal: BudgetJournal
) -> None:
    """The journal is read as of Redis's time: a rebuilding worker whose clock is ahead must not
    skip calls that are still inside the window."""
    on_time = HourlyBudget(
        redis_client, "graph", 1, window_seconds=2, journal=journal, skew_allowance_seconds=0.2
    )
    assert on_time.try_acquire() == 0.0
    time.sleep(1.2)
    redis_client.flushall()
    ahead = HourlyBudget(
        redis_client,
        "graph",
        1,
        window_seconds=2,
        journal=journal,
        skew_allowance_seconds=0.2,
        clock=lambda: time.time() + 1.5,
    )
    assert ahead.try_acquire() > 0, "the call made 1.2 s ago still fills the 2 s window"
