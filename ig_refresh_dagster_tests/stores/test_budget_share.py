"""The backfill share of the hourly budgets, on a real valkey-server: background traffic stops
at its share while event traffic keeps the rest, and the capacity the sensor and ETA read."""

from __future__ import annotations

import pytest
import redis

from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster.stores.budget_journal import BudgetJournal
from ig_refresh_dagster.stores.budget_share import BackgroundBudget, background_limit, measure
from ig_refresh_dagster_tests.conftest import Valkeys
from ig_refresh_dagster_tests.stores.test_budget import lose_memory


def test_background_stops_at_its_share_and_events_keep_the_rest(
    redis_client: redis.Redis,
) -> None:
    shared = HourlyBudget(redis_client, "graph", 10)
    background = BackgroundBudget(shared, percent=30)
    admitted = [background.try_acquire() == 0 for _ in range(5)]
    assert admitted == [True, True, True, False, False]
    assert sum(shared.try_acquire() == 0 for _ in range(10)) == 7, "events get the other 7"
    assert shared.try_acquire() > 0


def test_a_full_shared_budget_refuses_background_calls_too(redis_client: redis.Redis) -> None:
    shared = HourlyBudget(redis_client, "scrape", 2)
    for _ in range(2):
        assert shared.try_acquire() == 0
    assert BackgroundBudget(shared, percent=50).try_acquire() > 0


def test_a_block_from_meta_applies_to_every_caller(redis_client: redis.Redis) -> None:
    shared = HourlyBudget(redis_client, "graph", 100)
    BackgroundBudget(shared, percent=50).block_for(60, "usage 95%")
    assert shared.try_acquire() > 0


def test_capacity_is_what_background_may_use_now_and_per_hour(redis_client: redis.Redis) -> None:
    graph = HourlyBudget(redis_client, "graph", 200)
    scrape = HourlyBudget(redis_client, "scrape", 60)
    for _ in range(180):  # events used most of Graph: only 20 are left for anyone
        graph.try_acquire()
    for _ in range(5):
        BackgroundBudget(scrape, percent=50).try_acquire()
    capacity = measure([graph, scrape], percent=50)
    assert [(b.name, b.free) for b in capacity.budgets] == [("graph", 20), ("scrape", 25)]
    assert capacity.free_now == 45
    assert capacity.per_hour == 130
    assert capacity.eta_seconds(45) == 0
    assert capacity.eta_seconds(45 + 130) == pytest.approx(3600)
    scrape.block_for(30, "please wait")
    assert measure([graph, scrape], percent=50).free_now == 20


def test_a_zero_share_admits_no_background_call(redis_client: redis.Redis) -> None:
    shared = HourlyBudget(redis_client, "graph", 200)
    assert background_limit(200, 0) == 0
    assert BackgroundBudget(shared, percent=0).try_acquire() > 0
    assert measure([shared], percent=0).eta_seconds(1) is None


def test_the_share_survives_redis_losing_its_memory(valkeys: Valkeys, mongo_db) -> None:
    """Journaled like the main budget: after a restart of valkey the share of 2 still admits
    only 2 within the hour, while event calls keep the rest of the shared budget."""
    journal = BudgetJournal(mongo_db)
    journal.ensure_indexes()
    server = valkeys.start()
    shared = HourlyBudget(redis.Redis(port=server.port), "scrape", 4, journal=journal)
    background = BackgroundBudget(shared, percent=50)
    assert background.try_acquire() == 0
    lose_memory("restart", valkeys, server)
    admitted = [background.try_acquire() == 0 for _ in range(4)]
    assert admitted == [True, False, False, False]
    assert sum(shared.try_acquire() == 0 for _ in range(4)) == 2, "events get the other 2"
