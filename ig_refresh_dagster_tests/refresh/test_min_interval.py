"""The minimum interval between refreshes of one account, enforced in the refresh itself: an
event, freshness or backfill run too soon after the last refresh ends visibly as SKIPPED,
while an operator's explicit launch refreshes anyway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from dagster import DagsterInstance
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.refresh.run.min_interval import skip_reason
from ig_refresh_dagster.refresh.run.tags import FORCE, SKIPPED, SOURCE
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    run_refresh,
    seed_account,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
EVENT = {SOURCE: "event"}


@pytest.fixture
def resources(resources, httpserver: HTTPServer):
    """The shared resources, with Graph answering for @natgeo."""
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(graph_body("natgeo"))
    return resources


def refreshed_hours_ago(mongo_db, hours: float) -> str:
    last = datetime.now(UTC) - timedelta(hours=hours)
    return seed_account(mongo_db, handle="natgeo", followerCount=1000, lastDataRefresh=last)


@pytest.mark.parametrize("source", ["event", "freshness", "backfill"])
def test_an_automatic_run_soon_after_a_refresh_ends_skipped_with_its_reason(
    source: str, mongo_db, resources, instance: DagsterInstance, httpserver: HTTPServer
) -> None:
    account_id = refreshed_hours_ago(mongo_db, 2)

    result = run_refresh(account_id, resources, instance, tags={SOURCE: source})

    assert result.success
    assert httpserver.log == [], "no Instagram call"
    assert result.asset_materializations_for_node("instagram_profile") == []
    assert mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["followerCount"] == 1000
    (log,) = mongo_db["DataRefreshLog"].find({"runId": result.run_id})
    assert log["status"] == "SKIPPED"
    assert "within the minimum interval of 6h" in log["reason"]
    assert source in log["reason"]
    assert instance.get_run_by_id(result.run_id).tags[SKIPPED].startswith("refreshed 2.0h ago")
    assert not result.get_asset_check_evaluations(), "nothing refreshed, nothing checked"


@pytest.mark.parametrize(
    "tags",
    [
        {},  # Materialize in the UI, or a backfill launched there
        {**EVENT, FORCE: "true"},
        {**EVENT, "dagster/parent_run_id": "abc", "dagster/root_run_id": "abc"},  # re-execute
    ],
    ids=["no-source", "forced", "re-executed"],
)
def test_an_operator_launch_refreshes_inside_the_interval(
    tags: dict[str, str], mongo_db, resources, instance: DagsterInstance
) -> None:
    account_id = refreshed_hours_ago(mongo_db, 1)
    result = run_refresh(account_id, resources, instance, tags=tags)
    assert result.success
    assert mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["followerCount"] == 1500
    assert SKIPPED not in instance.get_run_by_id(result.run_id).tags


def test_an_event_after_the_interval_refreshes(
    mongo_db, resources, instance: DagsterInstance
) -> None:
    account_id = refreshed_hours_ago(mongo_db, 7)
    result = run_refresh(account_id, resources, instance, tags=EVENT)
    (log,) = mongo_db["DataRefreshLog"].find({"runId": result.run_id})
    assert log["status"] == "COMPLETED"


def test_the_guard_rules() -> None:
    recent = NOW - timedelta(hours=1)
    assert skip_reason(EVENT, recent, NOW, 6) is not None
    assert skip_reason(EVENT, None, NOW, 6) is None, "never refreshed"
    assert skip_reason(EVENT, recent, NOW, 0) is None, "0 turns the guard off"
    automatic_retry = {**EVENT, "dagster/parent_run_id": "a", "dagster/retry_number": "1"}
    assert skip_reason(automatic_retry, recent, NOW, 6) is not None
