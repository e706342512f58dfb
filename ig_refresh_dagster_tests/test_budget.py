"""The hourly budget against a real valkey-server."""

from __future__ import annotations

import threading

import pytest
import redis

from ig_refresh_dagster.instagram.errors import BudgetUnavailable
from ig_refresh_dagster.stores.budget import HourlyBudget


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
    from ig_refresh_dagster.devstack.services import free_port

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    budget = HourlyBudget(dead, "graph", 200)
    with pytest.raises(BudgetUnavailable, match="refusing graph calls"):
        budget.try_acquire()
