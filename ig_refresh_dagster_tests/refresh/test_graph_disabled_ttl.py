"""A token error disables Graph only until the token changes or a bounded time passes, and
``/ready`` says which. Real valkey, a real refresh run against pytest-httpserver as Graph."""

from __future__ import annotations

import datetime
import http.client
import json
import time

import redis
from dagster import instance_for_test
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.server import HealthServer
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.stores.fetch_memory import FetchMemory
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    TOKEN,
    graph_error,
    job_resources,
    run_refresh,
    seed_account,
    web_profile_body,
)

KEY = f"ig-refresh:graph-disabled:{token_fingerprint(TOKEN)}"


def graph_status(redis_url: str) -> dict:
    config = HealthConfig(
        host="127.0.0.1",
        port=0,
        redis_url=redis_url,
        instagram_access_token=TOKEN,
        instagram_business_account_id=BUSINESS_ID,
    )
    with HealthServer(config) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", "/ready")
        body = json.loads(conn.getresponse().read())
        conn.close()
    return body["checks"]["instagram_graph"]


def test_a_token_error_disables_graph_for_the_resources_ttl_and_ready_says_until_when(
    mongo_uri: str,
    mongo_db,
    httpserver: HTTPServer,
    redis_url_for_test: str,
    redis_client: redis.Redis,
) -> None:
    account = seed_account(mongo_db, handle="janedoe")
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(
        graph_error(190, 467, "Invalid OAuth access token"), status=400
    )
    httpserver.expect_request("/api/v1/users/web_profile_info/").respond_with_json(
        web_profile_body("janedoe")
    )
    resources = job_resources(
        mongo_uri,
        redis_url_for_test,
        httpserver.url_for("/v21.0"),
        httpserver.url_for(""),
        graph_disabled_ttl_hours=0.5,
    )
    before = datetime.datetime.now(datetime.UTC)
    with instance_for_test() as instance:
        assert run_refresh(account, resources, instance).success

    ttl = redis_client.ttl(KEY)
    assert 0 < ttl <= 1800, "the resource's graph_disabled_ttl_hours bounds the disable"
    graph = graph_status(redis_url_for_test)
    after = datetime.datetime.now(datetime.UTC)
    assert graph["ok"] is False
    prefix, rest = graph["items"][token_fingerprint(TOKEN)].split("disabled until ", 1)
    until_text, reason = rest.split(", or until the token changes: ", 1)
    assert prefix == ""
    until = datetime.datetime.fromisoformat(until_text)
    assert before < until <= after + datetime.timedelta(seconds=1800)
    assert "Invalid OAuth access token" in reason
    assert TOKEN not in json.dumps(graph)


def test_graph_comes_back_by_itself_once_the_ttl_has_passed(redis_client: redis.Redis) -> None:
    memory = FetchMemory(redis_client, graph_disabled_ttl_seconds=1)
    memory.disable_graph("aaaa", "graph_auth_190: token expired")
    assert memory.graph_disabled_reason("aaaa") == "graph_auth_190: token expired"
    deadline = time.monotonic() + 10
    while memory.graph_disabled_reason("aaaa") is not None:
        assert time.monotonic() < deadline, "the disable never expired"
        time.sleep(0.2)
    assert memory.graph_disabled("aaaa") is None


def test_a_new_token_is_not_disabled_by_the_old_ones_error(redis_client: redis.Redis) -> None:
    memory = FetchMemory(redis_client)
    memory.disable_graph(token_fingerprint("old-token"), "graph_auth_190: expired")
    assert memory.graph_disabled(token_fingerprint("new-token")) is None


def test_a_disable_written_without_an_expiry_gets_one(redis_client: redis.Redis) -> None:
    """Keys written before the TTL existed would otherwise disable Graph forever."""
    redis_client.set("ig-refresh:graph-disabled:aaaa", "graph_auth_190: from an older version")
    disabled = FetchMemory(redis_client, graph_disabled_ttl_seconds=600).graph_disabled("aaaa")
    assert disabled is not None and disabled.reason == "graph_auth_190: from an older version"
    assert 0 < redis_client.ttl("ig-refresh:graph-disabled:aaaa") <= 600
