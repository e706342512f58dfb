"""Insights never fail the refresh, and every Graph call they make is charged to the budget.

The refresh job in process on litemongo and valkey-server; pytest-httpserver answers Graph with
the error under test, and the demo's stand-in counts what it received for the budget test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from dagster import DagsterEventType, DagsterInstance, instance_for_test
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.devstack.seed import demo_accounts, seed_accounts
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.refresh.run.failures import TRANSIENT_RETRIES
from ig_refresh_dagster.stores.budget import HourlyBudget, graph_budget_name
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    TOKEN,
    graph_body,
    graph_error,
    job_resources,
    run_refresh,
    seed_account,
)

OWNER_ID = "17841400000000777"
OWNER_TOKEN = "owner-token-for-insights"
GRAPH_PATH = f"/v21.0/{BUSINESS_ID}"
INSIGHTS_PATH = f"/v21.0/{OWNER_ID}/insights"


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def owned_account(mongo_db, httpserver: HTTPServer) -> str:
    """A business account whose owner authorised the app; Business Discovery answers."""
    httpserver.expect_request(GRAPH_PATH).respond_with_json(graph_body("natgeo"))
    return seed_account(
        mongo_db,
        handle="natgeo",
        instagramAuth={"userId": OWNER_ID, "accessToken": OWNER_TOKEN},
    )


@pytest.fixture
def resources(mongo_uri: str, redis_url_for_test: str, redis_client, httpserver: HTTPServer):
    return job_resources(
        mongo_uri, redis_url_for_test, httpserver.url_for("/v21.0"), httpserver.url_for("")
    )


def graph_requests(httpserver: HTTPServer) -> int:
    return sum(1 for request, _ in httpserver.log if request.path.startswith("/v21.0/"))


def graph_used(client: redis.Redis) -> int:
    """The calls the (one) credential's budget admitted, insights included."""
    return HourlyBudget(client, graph_budget_name(token_fingerprint(TOKEN)), 1).status().used


def completed_with_insights(db, run_id: str) -> dict:
    (log,) = list(db["DataRefreshLog"].find({"runId": run_id}))
    assert log["status"] == "COMPLETED"
    assert log["source"] == "graph"
    return log["insights"]


@pytest.mark.parametrize(
    ("code", "what"),
    [(4, "app throttled"), (17, "user throttled"), (80002, "Instagram BUC limit"), (110, "110")],
)
def test_insights_error_is_reported_and_the_refresh_completes(
    code: int,
    what: str,
    mongo_db,
    redis_client,
    httpserver: HTTPServer,
    owned_account,
    resources,
    instance,
) -> None:
    httpserver.expect_request(INSIGHTS_PATH).respond_with_json(
        graph_error(code, message=what), status=400
    )

    result = run_refresh(owned_account, resources, instance)

    assert result.success
    insights = completed_with_insights(mongo_db, result.run_id)
    assert insights["status"] == "failed"
    assert f"code {code}" in insights["detail"]
    assert OWNER_TOKEN not in insights["detail"]
    assert result.asset_materializations_for_node("instagram_profile")
    assert mongo_db["InstagramInsights"].count_documents({}) == 0
    assert graph_requests(httpserver) == graph_used(redis_client) == 2


@pytest.mark.slow
def test_transient_insights_error_that_exhausts_its_retries_is_reported(
    mongo_db, redis_client, httpserver: HTTPServer, owned_account, resources, instance
) -> None:
    """Graph answers 503 every time: the step retries (with backoff, about 30 s in all) from
    the insights stage, then reports the failure, and the refresh completes. The profile is
    fetched once: the retried attempts resume after the upsert."""
    httpserver.expect_request(INSIGHTS_PATH).respond_with_data("upstream down", status=503)

    result = run_refresh(owned_account, resources, instance)

    assert result.success
    insights = completed_with_insights(mongo_db, result.run_id)
    assert insights["status"] == "failed"
    assert "503" in insights["detail"]
    retries = instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert {e.step_key for e in retries} == {"instagram_profile"}
    assert len(retries) == TRANSIENT_RETRIES.max_retries
    insights_calls = [r for r, _ in httpserver.log if r.path == INSIGHTS_PATH]
    assert len(insights_calls) == TRANSIENT_RETRIES.max_retries + 1
    assert graph_requests(httpserver) == graph_used(redis_client)


@pytest.mark.parametrize("hourly_budget", [200, 4])
def test_every_graph_call_insights_included_is_charged_to_the_budget(
    hourly_budget: int, mongo_db, mongo_uri, redis_url_for_test, redis_client, instance
) -> None:
    """What the stand-in received equals what the budget admitted, and never exceeds it: two
    refreshes of an owned account (Business Discovery, two account-insights calls, three
    media) need 12 Graph calls; with a budget of 4 the rest is refused, the second refresh
    scrapes, and both complete."""
    acme = next(a for a in demo_accounts() if a.username == "acme.studio")
    seed_accounts(mongo_db, redis_client, [acme])
    with InstagramStandin(token=TOKEN) as standin:
        resources = job_resources(
            mongo_uri,
            redis_url_for_test,
            standin.graph_url,
            standin.web_url,
            hourly_budget=hourly_budget,
        )
        results = [run_refresh(acme.account_id, resources, instance) for _ in range(2)]
        received = [r for r in standin.requests if r[0] in ("graph", "insights")]

    assert all(r.success for r in results)
    assert len(received) == graph_used(redis_client) == min(12, hourly_budget)
    statuses = [mongo_db["DataRefreshLog"].find_one({"runId": r.run_id})["status"] for r in results]
    assert statuses == ["COMPLETED", "COMPLETED"]
