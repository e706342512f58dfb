"""ProfileScraper against a real local HTTP server, driven by the scrape fixture corpus
(JSON endpoint answers, and profile pages in several locales)."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.instagram import (
    InstagramError,
    InvalidUsername,
    ProfileScraper,
    TransientError,
)
from ig_refresh_dagster.instagram.scrape import IG_APP_ID

from .helpers import (
    JSON_PATH,
    case_params,
    check_error,
    check_profile,
    load_case,
    requested_kinds,
    scraper,
    serve_scrape,
)


@pytest.mark.parametrize("case", case_params("scrape"))
def test_scrape_corpus(httpserver: HTTPServer, case: dict[str, Any]) -> None:
    serve_scrape(httpserver, case)
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(InstagramError) as info:
            scraper(httpserver).fetch(case["username"])
        error = info.value
        check_error(error, expect)
    else:
        profile = scraper(httpserver).fetch(case["username"])
        assert profile.source == "scrape"
        assert profile.username == case["username"]
        check_profile(profile, expect["profile"])
    if "requests" in expect:
        assert requested_kinds(httpserver) == expect["requests"]
    # Nothing was ever asked of an endpoint the case did not serve, and the login page
    # was never fetched.
    assert httpserver.assertions == []
    assert all(not r.path.startswith("/accounts/login") for r, _ in httpserver.log)


def test_json_request_carries_app_id_and_browser_agent(httpserver: HTTPServer) -> None:
    serve_scrape(httpserver, load_case("scrape", "json_ok_full"))
    scraper(httpserver).fetch("Sam.Outdoors")
    ((request, _),) = httpserver.log
    assert request.path == JSON_PATH
    assert request.args["username"] == "sam.outdoors"
    assert request.headers["x-ig-app-id"] == IG_APP_ID
    assert request.headers["User-Agent"].startswith("Mozilla/5.0")


def test_recent_media_from_json(httpserver: HTTPServer) -> None:
    serve_scrape(httpserver, load_case("scrape", "json_ok_full"))
    profile = scraper(httpserver).fetch("sam.outdoors")
    first, second = profile.recent_media
    assert (first.id, first.caption, first.like_count, first.comments_count) == (
        "33001",
        "Sunrise",
        90,
        10,
    )
    assert first.media_type == "IMAGE" and first.media_product_type == "FEED"
    assert first.permalink is not None and first.permalink.endswith("/p/SamA1/")
    assert first.timestamp is not None and first.timestamp.tzinfo is not None
    # Likes from the preview edge when the full edge is absent; no caption stays unknown.
    assert (second.like_count, second.caption, second.media_product_type) == (130, None, "REELS")


def test_invalid_username_makes_no_request(httpserver: HTTPServer) -> None:
    with pytest.raises(InvalidUsername):
        scraper(httpserver).fetch("../accounts/login")
    assert httpserver.log == []


def test_connection_refused_is_transient(unused_port: int) -> None:
    with pytest.raises(TransientError) as info:
        ProfileScraper(f"http://127.0.0.1:{unused_port}", timeout=2.0).fetch("ada.l")
    assert info.value.reason == "scrape_network"


def test_redirect_loop_is_transient(httpserver: HTTPServer) -> None:
    serve_scrape(httpserver, {**load_case("scrape", "html_en_exact"), "html_response": None})
    httpserver.expect_request("/ada.l/").respond_with_data(
        "", status=302, headers={"Location": "/ada.l/"}
    )
    with pytest.raises(TransientError) as info:
        scraper(httpserver).fetch("ada.l")
    assert info.value.reason == "scrape_redirect_loop"
