"""Stores that go away in the middle of runs: MongoDB (the embedded store's files out of reach)
and Redis (valkey restarting, empty). Refreshes in flight and those queued behind the fault end
with one terminal entry each and are refreshed once the store is back."""

from __future__ import annotations

import time

import pytest
from bson import ObjectId
from dagster import DagsterRunStatus

from ig_refresh_dagster.refresh.run.failures import RETRY_STEP_FAILURE_TAG
from ig_refresh_dagster_tests.faults.conftest import FaultStack, wait_until

pytestmark = pytest.mark.slow


def test_mongo_unreachable_mid_run_closes_every_entry_once_it_is_back(stack: FaultStack) -> None:
    accounts = stack.seed(3)
    behind = stack.seed(1)
    stack.standin.gate.clear()
    stack.publish(accounts)
    wait_until(lambda: stack.in_flight_at_gate(2), 120, "two refreshes in flight")
    with stack.mongo_unreachable():
        stack.standin.gate.set()
        stack.publish(behind)
        # Until a run has failed for good while MongoDB is away (its step retries outlasted),
        # so its hook cannot write and its entry is left to the log reconciler.
        failed = wait_until(
            lambda: [
                r
                for r in stack.runs()
                if r.status == DagsterRunStatus.FAILURE
                and r.tags.get("dagster/partition") in accounts + behind
            ],
            150,
            "a run failing during the outage",
        )
    back = stack.wait_settled(accounts + behind, timeout=180)
    print(f"\nMongoDB back -> every entry terminal: {back:.1f}s")
    for run in failed:
        retried = stack.instance().get_run_by_id(run.run_id)
        assert retried.tags.get(RETRY_STEP_FAILURE_TAG) == "true", "an outage is retried"


def test_redis_restart_mid_run_loses_no_refresh(stack: FaultStack) -> None:
    """The runs in flight still have Redis calls to make when valkey comes back empty: their
    cache entries and their owners' insights (charged to the Graph budget, which must rebuild
    its window from the journal)."""
    accounts = stack.seed_owned(3)
    stack.standin.gate.clear()
    stack.publish(accounts)
    wait_until(lambda: stack.in_flight_at_gate(2), 120, "two refreshes in flight")
    charged_before = stack.graph_budget().status().used
    assert charged_before >= 1, "the refreshes in flight were charged before the restart"
    stack.stop_redis()
    stack.standin.gate.set()
    time.sleep(3)
    stack.start_redis()
    behind = stack.seed_owned(1)
    stack.publish(behind)
    stack.wait_settled(accounts + behind, timeout=150)

    budget = stack.graph_budget()
    journaled = stack.db["InstagramBudgetJournal"].count_documents(
        {"budget": f"ig-refresh:budget:{budget.name}", "kind": "call"}
    )
    used = budget.status().used
    assert used == journaled, "the window was rebuilt from the journal"
    assert used >= charged_before + len(behind), "the calls before the restart still count"
    completed = stack.db["DataRefreshLog"].find(
        {"accountId": {"$in": [ObjectId(a) for a in accounts + behind]}, "status": "COMPLETED"}
    )
    insights = [e["insights"]["status"] for e in completed]
    assert len(insights) == len(accounts + behind)
