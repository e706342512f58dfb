"""GraphClient against a real local HTTP server, driven by the Graph fixture corpus."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from ig_refresh_dagster.instagram import (
    GraphClient,
    InstagramError,
    InvalidUsername,
    PermanentError,
    TransientError,
)
from ig_refresh_dagster.instagram.graph import token_fingerprint

from .helpers import (
    GRAPH_PATH,
    TOKEN,
    case_params,
    check_error,
    check_profile,
    graph_client,
    load_case,
    serve,
    wait_until_answered,
)

EXPECTED_FIELDS = (
    "business_discovery.username(acme.studio){id,ig_id,username,name,biography,"
    "profile_picture_url,followers_count,follows_count,media_count,website,"
    "media.limit(12){id,caption,like_count,comments_count,media_type,media_product_type,"
    "permalink,timestamp}}"
)


@pytest.mark.parametrize("case", case_params("graph"))
def test_graph_corpus(httpserver: HTTPServer, case: dict[str, Any]) -> None:
    serve(httpserver, GRAPH_PATH, case["response"], "graph")
    expect = case["expect"]
    client = graph_client(httpserver)
    if "error" in expect:
        with pytest.raises(InstagramError) as info:
            client.fetch(case["username"])
        error = info.value
        check_error(error, expect)
        if "usage" in expect:
            assert error.usage is not None
            assert error.usage.model_dump() == expect["usage"]
        assert "@acme.studio" in str(error)
    else:
        result = client.fetch(case["username"])
        check_profile(result.profile, expect["profile"])
        if "usage" in expect:
            usage = result.usage.model_dump() if result.usage else None
            assert usage == expect["usage"]
    assert len(httpserver.log) == 1


def test_request_shape_token_only_in_header(httpserver: HTTPServer) -> None:
    serve(httpserver, GRAPH_PATH, load_case("graph", "ok_full")["response"], "graph")
    graph_client(httpserver).fetch("  @Acme.Studio ")
    ((request, _),) = httpserver.log
    assert request.method == "GET"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    query = parse_qs(request.query_string.decode())
    assert query == {"fields": [EXPECTED_FIELDS]}
    assert TOKEN not in request.url


def test_media_limit_is_configurable(httpserver: HTTPServer) -> None:
    serve(httpserver, GRAPH_PATH, load_case("graph", "ok_full")["response"], "graph")
    client = graph_client(httpserver)
    client.media_limit = 3
    client.fetch("acme.studio")
    ((request, _),) = httpserver.log
    assert "media.limit(3){" in parse_qs(request.query_string.decode())["fields"][0]


def test_profile_mapping_details(httpserver: HTTPServer) -> None:
    serve(httpserver, GRAPH_PATH, load_case("graph", "ok_full")["response"], "graph")
    profile = graph_client(httpserver).fetch("acme.studio").profile
    first = profile.recent_media[0]
    assert first.timestamp is not None and first.timestamp.utcoffset().total_seconds() == 0
    assert first.timestamp.isoformat() == "2026-11-20T10:00:00+00:00"
    assert profile.recent_media[2].like_count is None
    assert profile.fetched_at.tzinfo is not None


def test_invalid_username_makes_no_request(httpserver: HTTPServer) -> None:
    with pytest.raises(InvalidUsername):
        graph_client(httpserver).fetch("bad name){id}")
    assert httpserver.log == []


def test_connection_refused_is_transient(unused_port: int) -> None:
    client = GraphClient(f"http://127.0.0.1:{unused_port}/v21.0", "1", TOKEN, timeout=2.0)
    with pytest.raises(TransientError) as info:
        client.fetch("acme.studio")
    assert info.value.reason == "graph_network"


def test_timeout_is_transient(httpserver: HTTPServer) -> None:
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(5)
        return Response("{}", mimetype="application/json")

    httpserver.expect_request(GRAPH_PATH).respond_with_handler(slow)
    try:
        with pytest.raises(TransientError) as info:
            graph_client(httpserver, timeout=0.2).fetch("acme.studio")
    finally:
        release.set()
        wait_until_answered(httpserver)
    assert info.value.reason == "graph_timeout"


def test_token_fingerprint_is_stable_and_not_the_token() -> None:
    assert token_fingerprint(TOKEN) == token_fingerprint(TOKEN)
    assert token_fingerprint(TOKEN) != token_fingerprint(TOKEN + "x")
    assert TOKEN not in token_fingerprint(TOKEN)
    assert len(token_fingerprint(TOKEN)) == 16


def test_redirect_is_refused_and_names_the_host(httpserver: HTTPServer) -> None:
    """Graph never redirects; following one could carry the request (and the answer meant for
    our token) to another host."""
    httpserver.expect_request(GRAPH_PATH).respond_with_data(
        "", status=307, headers={"Location": "https://collector.example/v25.0/x?y=1"}
    )
    with pytest.raises(PermanentError) as info:
        graph_client(httpserver).fetch("acme.studio")
    assert info.value.reason == "graph_redirect"
    assert "collector.example" in info.value.message
    assert len(httpserver.log) == 1


def test_hostile_urls_are_unknown(httpserver: HTTPServer) -> None:
    case = load_case("graph", "ok_full")
    found = case["response"]["json"]["business_discovery"]
    found["website"] = "javascript:alert(1)"
    found["profile_picture_url"] = "//scontent.example/relative.jpg"
    found["media"]["data"][0]["permalink"] = "data:text/html,<script>alert(1)</script>"
    found["media"]["data"][1]["permalink"] = "https://www.instagram.com/p/ A2/"
    serve(httpserver, GRAPH_PATH, case["response"], "graph")
    profile = graph_client(httpserver).fetch("acme.studio").profile
    assert profile.website is None
    assert profile.profile_picture_url is None
    assert [m.permalink for m in profile.recent_media] == [
        None,
        None,
        "https://www.instagram.com/p/A3/",
    ]
    fields = profile.to_account_fields()
    assert "imageUrl" not in fields
    assert "externalUrl" not in fields["instagramData"]
    assert "permalink" not in fields["instagramData"]["recentMedia"][0]
