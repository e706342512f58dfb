"""The freshness sensor against litemongo and a real valkey-server: the most overdue accounts
first, never more than the budgets leave beyond the events' reserve, minus background runs
already queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    SensorResult,
    build_sensor_context,
)
from dagster._core.test_utils import create_run_for_test

from ig_refresh_dagster.refresh.launch.freshness import instagram_freshness_sensor
from ig_refresh_dagster.refresh.launch.requests import launch_tags
from ig_refresh_dagster.refresh.run.refresh_runs import PROFILE
from ig_refresh_dagster.refresh.run.tags import HANDLE, PRIORITY, SOURCE, Source
from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster_tests.support.refresh_helpers import job_resources, seed_account


@pytest.fixture
def resources(mongo_uri: str, redis_url_for_test: str, redis_client) -> dict[str, Any]:
    """Scraping only, 10 per hour: the backfill share (50 %) is 5."""
    unused = "http://127.0.0.1:9"
    return job_resources(
        mongo_uri, redis_url_for_test, unused, unused, token=None, scrape_hourly_budget=10
    )


def days_ago(n: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)


@pytest.fixture
def accounts(mongo_db) -> dict[str, str]:
    return {
        "fresh": seed_account(mongo_db, handle="fresh", lastDataRefresh=days_ago(2)),
        "week.big": seed_account(
            mongo_db, handle="week.big", followerCount=9_000, lastDataRefresh=days_ago(8)
        ),
        "week.small": seed_account(
            mongo_db, handle="week.small", followerCount=90, lastDataRefresh=days_ago(8)
        ),
        "month": seed_account(mongo_db, handle="month", lastDataRefresh=days_ago(30)),
        "never": seed_account(mongo_db, handle="never", followerCount=5),
        "year": seed_account(mongo_db, handle="year", lastDataRefresh=days_ago(365)),
        "gone": seed_account(
            mongo_db, handle="gone", lastDataRefresh=days_ago(90), instagramData={"isGone": True}
        ),
    }


def evaluate(instance: DagsterInstance, resources: dict[str, Any]) -> SensorResult:
    with build_sensor_context(
        instance=instance,
        resources={"mongo": resources["mongo"], "instagram": resources["instagram"]},
    ) as context:
        return instagram_freshness_sensor(context)


def handles(result: SensorResult) -> list[str]:
    return [r.tags[HANDLE] for r in result.run_requests]


def test_requests_the_most_overdue_within_the_backfill_share(
    instance: DagsterInstance, resources, accounts
) -> None:
    result = evaluate(instance, resources)

    assert handles(result) == ["never", "year", "month", "week.big", "week.small"]
    first = result.run_requests[0]
    assert first.partition_key == accounts["never"]
    assert first.tags[SOURCE] == "freshness"
    assert int(first.tags[PRIORITY]) < 0
    assert first.run_key.startswith(f"freshness:{accounts['never']}:")
    (add,) = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == sorted(r.partition_key for r in result.run_requests)


def test_events_reserve_and_queued_background_runs_shrink_the_request(
    instance: DagsterInstance, resources, accounts, redis_client: redis.Redis
) -> None:
    for _ in range(7):  # events used 7 of 10: only 3 are left for anyone
        HourlyBudget(redis_client, "scrape", 10).try_acquire()
    create_run_for_test(
        instance,
        job_name="instagram_refresh_job",
        status=DagsterRunStatus.STARTED,
        tags={SOURCE: "freshness", "dagster/partition": accounts["never"]},
    )
    result = evaluate(instance, resources)
    assert handles(result) == ["year", "month"], "3 free, 1 already running (never)"


def test_a_running_backfill_takes_its_share_whatever_job_it_runs_as(
    instance: DagsterInstance, resources, accounts, redis_client: redis.Redis
) -> None:
    """Backfills (by query or from the UI) run as ``__ASSET_JOB``: they count all the same."""
    for _ in range(7):
        HourlyBudget(redis_client, "scrape", 10).try_acquire()
    for account, tags in (
        ("never", launch_tags(Source.BACKFILL)),
        ("year", {"dagster/backfill": "ui-backfill"}),
    ):
        create_run_for_test(
            instance,
            job_name="__ASSET_JOB",
            status=DagsterRunStatus.STARTED,
            asset_selection=frozenset({PROFILE}),
            tags={**tags, "dagster/backfill": "bf", "dagster/partition": accounts[account]},
        )
    result = evaluate(instance, resources)
    assert handles(result) == ["month"], "3 free, 2 taken by the running backfill"


def test_no_capacity_beyond_the_reserve_skips_with_the_budgets(
    instance: DagsterInstance, resources, accounts, redis_client: redis.Redis
) -> None:
    for _ in range(10):
        HourlyBudget(redis_client, "scrape", 10).try_acquire()
    result = evaluate(instance, resources)
    assert result.run_requests == []
    assert "no budget beyond the events' reserve: scrape 0 free now" in (
        result.skip_reason.skip_message
    )


def test_nothing_overdue_skips_and_says_so(instance: DagsterInstance, resources, mongo_db) -> None:
    seed_account(mongo_db, handle="fresh", lastDataRefresh=days_ago(1))
    result = evaluate(instance, resources)
    assert result.skip_reason.skip_message == "every account was refreshed within 7 days"
