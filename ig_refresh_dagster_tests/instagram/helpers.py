"""Shared pieces for the Instagram tests: the fixture corpus and a real local HTTP server
(pytest-httpserver) answering as Graph and instagram.com would."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.devstack.instagram_standin import response_from_spec
from ig_refresh_dagster.instagram import GraphClient, InstagramProfile, ProfileScraper
from ig_refresh_dagster.instagram.errors import InstagramError
from ig_refresh_dagster.instagram.graph_pool import Budget, GraphLane, GraphPool, Memory
from ig_refresh_dagster.instagram.metrics import DEFAULT_GRAPH_MAJOR

FIXTURES = Path(__file__).parent / "fixtures"
BUSINESS_ID = "17841400000000001"
GRAPH_VERSION = f"v{DEFAULT_GRAPH_MAJOR}.0"
GRAPH_PATH = f"/{GRAPH_VERSION}/{BUSINESS_ID}"
JSON_PATH = "/api/v1/users/web_profile_info/"
TOKEN = "test-token-5f2a"


def load_case(kind: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / kind / f"{name}.json").read_text(encoding="utf-8"))


def case_params(kind: str) -> list[Any]:
    return [
        pytest.param(load_case(kind, path.stem), id=path.stem)
        for path in sorted((FIXTURES / kind).glob("*.json"))
    ]


def serve(
    server: HTTPServer,
    path: str,
    spec: dict[str, Any],
    kind: str,
    query_string: str | None = None,
) -> None:
    server.expect_request(path, method="GET", query_string=query_string).respond_with_response(
        response_from_spec(spec, FIXTURES / kind)
    )


def serve_scrape(server: HTTPServer, case: dict[str, Any]) -> None:
    """Register a scrape case's routes; extra (redirect target) routes first, since handlers
    match in registration order and the profile route accepts any query string."""
    username = case["username"]
    for target, spec in case.get("extra_routes", {}).items():
        path, _, query = target.partition("?")
        serve(server, path, spec, "scrape", query_string=query)
    if case.get("json_response") is not None:
        serve(server, JSON_PATH, case["json_response"], "scrape", f"username={username}")
    if case.get("html_response") is not None:
        serve(server, f"/{username}/", case["html_response"], "scrape")


def wait_until_answered(server: HTTPServer, count: int = 1, timeout: float = 10.0) -> None:
    """Wait (bounded) until the server has finished ``count`` requests. A handler still busy
    after the client gave up would otherwise log its request into the next test."""
    ends = time.monotonic() + timeout
    while len(server.log) < count and time.monotonic() < ends:
        time.sleep(0.02)
    assert len(server.log) >= count, "the server did not finish the request in time"


def requested_kinds(server: HTTPServer) -> list[str]:
    kinds = []
    for request, _ in server.log:
        if request.path == GRAPH_PATH:
            kinds.append("graph")
        elif request.path == JSON_PATH:
            kinds.append("json")
        else:
            kinds.append("html")
    return kinds


def graph_client(server: HTTPServer, token: str = TOKEN, timeout: float = 5.0) -> GraphClient:
    return GraphClient(server.url_for(f"/{GRAPH_VERSION}"), BUSINESS_ID, token, timeout=timeout)


def pool_of(graph: GraphClient | None, budget: Budget, memory: Memory) -> GraphPool:
    """A pool of this one credential (none without a client)."""
    return GraphPool([GraphLane(graph, budget)] if graph is not None else [], memory)


def scraper(server: HTTPServer) -> ProfileScraper:
    return ProfileScraper(server.url_for("").rstrip("/"), timeout=5.0)


def check_profile(profile: InstagramProfile, expected: dict[str, Any]) -> None:
    dumped = profile.model_dump()
    for key, value in expected.items():
        if key == "recent_media_count":
            assert len(profile.recent_media) == value
        elif key == "engagement_rate" and value is not None:
            assert profile.engagement_rate == pytest.approx(value, abs=1e-4)
        else:
            assert dumped[key] == value, key


def check_error(error: InstagramError, expect: dict[str, Any]) -> None:
    """A corpus case's expected error class, reason and wait."""
    assert type(error).__name__ == expect["error"]
    if "reason" in expect:
        assert error.reason == expect["reason"]
    if "retry_after" in expect:
        assert error.retry_after == expect["retry_after"]
