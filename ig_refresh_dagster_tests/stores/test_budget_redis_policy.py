"""Budgets cannot be evicted silently: the budgets' Redis and its ``maxmemory-policy``, read on
real valkey-servers started with each policy, and with ``CONFIG`` disabled as managed Redis
services do (``--rename-command CONFIG ""``): in ``/ready``, in ``/metrics`` and at the start of
every run (the budget resource)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from dagster import DagsterInstance, job, op

from ig_refresh_dagster.devstack.services import redis_url
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.probe import CRITICAL_CHECKS, ReadinessProbe
from ig_refresh_dagster.health.server import HealthServer
from ig_refresh_dagster.refresh.run.resources import BudgetRedisResource
from ig_refresh_dagster_tests.conftest import Valkeys
from ig_refresh_dagster_tests.health.test_sidecar_metrics import scrape, value

NO_CONFIG = ("--rename-command", "CONFIG", '""')
NOEVICTION_GAUGE = "ig_refresh_budget_redis_noeviction"

# (server arguments, /ready ok, detail, gauge)
CASES = {
    "noeviction": (("--maxmemory-policy", "noeviction"), True, "maxmemory-policy noeviction", 1),
    "lru": (
        ("--maxmemory-policy", "allkeys-lru"),
        False,
        "maxmemory-policy is allkeys-lru, not noeviction: budget counters can be evicted",
        0,
    ),
    "config refused": (NO_CONFIG, True, "maxmemory-policy unknown (the server refuses", -1),
}


def budget_check(cache_url: str, budget_url: str | None) -> dict[str, Any]:
    config = HealthConfig(
        host="127.0.0.1", port=0, redis_url=cache_url, budget_redis_url=budget_url
    )
    probe = ReadinessProbe(config)
    try:
        status, body = probe.run()
    finally:
        probe.close()
    assert status == 503  # nothing else is configured; the check itself is what is looked at
    return body["checks"]["budget_redis"]


@pytest.mark.parametrize("case", CASES)
def test_ready_reads_the_separate_budget_redis_policy(
    case: str, valkeys: Valkeys, caplog: pytest.LogCaptureFixture
) -> None:
    args, ok, detail, _ = CASES[case]
    cache = valkeys.start("--maxmemory-policy", "allkeys-lru")  # a typical cache Redis
    budgets = valkeys.start(*args)
    with caplog.at_level(logging.WARNING, logger="ig_refresh_dagster.health"):
        check = budget_check(redis_url(cache), redis_url(budgets))
    assert check["ok"] is ok, check
    assert detail in check["detail"]
    assert f"127.0.0.1:{budgets.port}" in check["detail"]
    warned = [r.getMessage() for r in caplog.records if "budget Redis" in r.getMessage()]
    assert bool(warned) is (case != "noeviction"), warned


def test_budgets_in_the_cache_redis_are_checked_there(valkeys: Valkeys) -> None:
    """Without INSTAGRAM_BUDGET_REDIS_URL the budgets live in REDIS_URL: an LRU cache there
    makes /ready fail, and says so."""
    cache = valkeys.start("--maxmemory-policy", "allkeys-lru")
    check = budget_check(redis_url(cache), None)
    assert not check["ok"]
    assert check["detail"].endswith("(REDIS_URL)")
    assert "budget_redis" in CRITICAL_CHECKS


def test_an_unreachable_budget_redis_is_not_ready(valkeys: Valkeys) -> None:
    cache = valkeys.start()
    gone = valkeys.start()
    gone.stop()
    check = budget_check(redis_url(cache), redis_url(gone))
    assert not check["ok"]
    assert "unreachable" in check["detail"]


@pytest.mark.parametrize("case", CASES)
def test_metrics_expose_the_budget_redis_policy(case: str, valkeys: Valkeys) -> None:
    args, _, _, gauge = CASES[case]
    cache, budgets = valkeys.start(), valkeys.start(*args)
    config = HealthConfig(
        host="127.0.0.1", port=0, redis_url=redis_url(cache), budget_redis_url=redis_url(budgets)
    )
    with HealthServer(config) as server:
        samples, _ = scrape(server)
    assert value(samples, "ig_refresh_metrics_source_up", source="budget_redis_policy") == 1
    assert value(samples, NOEVICTION_GAUGE) == gauge


def run_log(url: str) -> list[str]:
    """The messages of a real run whose op uses the budget resource (in process)."""

    @op
    def charges_a_budget(budget_redis: BudgetRedisResource) -> None:
        budget_redis.client().ping()

    @job
    def budget_job() -> None:
        charges_a_budget()

    with DagsterInstance.ephemeral() as instance:
        result = budget_job.execute_in_process(
            resources={"budget_redis": BudgetRedisResource(url=url)},
            instance=instance,
            raise_on_error=False,
        )
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return [m for m in messages if m.startswith("budget Redis")] + (
        ["RUN SUCCEEDED"] if result.success else []
    )


@pytest.mark.parametrize("case", CASES)
def test_a_run_warns_at_start_when_budgets_could_be_evicted(case: str, valkeys: Valkeys) -> None:
    args, _, detail, _ = CASES[case]
    logged = run_log(redis_url(valkeys.start(*args)))
    if case == "noeviction":
        assert logged == ["RUN SUCCEEDED"]
    else:
        (warning, succeeded) = logged
        assert detail in warning and succeeded == "RUN SUCCEEDED"


def test_an_unreachable_budget_redis_is_a_warning_at_start_not_a_crash(
    valkeys: Valkeys,
) -> None:
    """The run then fails where it uses Redis (here: its op), not in the policy check."""
    gone = valkeys.start()
    gone.stop()
    (warning,) = run_log(redis_url(gone))
    assert "maxmemory-policy not read: ConnectionError" in warning
