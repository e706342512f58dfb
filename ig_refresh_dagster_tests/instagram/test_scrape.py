"""ProfileScraper against a real local HTTP server, driven by the scrape fixture corpus
(JSON endpoint answers, and profile pages in several locales)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.instagram import (
    InstagramError,
    InvalidUsername,
    ProfileScraper,
    ScrapeBlocked,
    TransientError,
)
from ig_refresh_dagster.instagram.retry_after import MAX_RETRY_AFTER_SECONDS, retry_after_seconds
from ig_refresh_dagster.instagram.scrape import IG_APP_ID, RATE_BLOCK_WAIT_SECONDS, RedirectPolicy

from .helpers import (
    FIXTURES,
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


# -- redirects, Retry-After, hostile answers -------------------------------------------------


def _profile_redirects_to(server: HTTPServer, location: str) -> None:
    serve_scrape(server, {**load_case("scrape", "html_en_exact"), "html_response": None})
    server.expect_request("/ada.l/").respond_with_data(
        "", status=302, headers={"Location": location}
    )


@pytest.mark.parametrize(
    "target",
    [
        "https://{host}/ada.l/",  # same host, other scheme
        "http://{host}@evil.example/ada.l/",  # user info that hides the real host
        "http://evil.example/ada.l/",
        "//evil.example/ada.l/",
    ],
)
def test_redirect_off_the_configured_host_is_not_followed(
    httpserver: HTTPServer, target: str
) -> None:
    host = f"{httpserver.host}:{httpserver.port}"
    _profile_redirects_to(httpserver, target.format(host=host))
    with pytest.raises(TransientError) as info:
        scraper(httpserver).fetch("ada.l")
    assert info.value.reason == "scrape_unexpected_redirect"
    assert "not followed" in info.value.message
    assert [r.path for r, _ in httpserver.log] == [JSON_PATH, "/ada.l/"]


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("https://www.instagram.com/ada.l/?hl=en", True),
        ("https://instagram.com/ada.l/", True),
        ("https://help.instagram.com/", True),
        ("https://WWW.Instagram.com:443/ada.l/", True),
        ("http://www.instagram.com/ada.l/", False),  # no downgrade to plain http
        ("https://www.instagram.com:8443/ada.l/", False),
        ("https://user@www.instagram.com/ada.l/", False),
        ("https://www.instagram.com@evil.example/", False),
        ("https://instagram.com.evil.example/", False),
        ("https://evilinstagram.com/", False),
        ("https://evil.example/ada.l/", False),
        ("javascript:alert(1)", False),
        ("https://www.instagram.com:99999/", False),
    ],
)
def test_redirect_policy_for_instagram(target: str, allowed: bool) -> None:
    assert RedirectPolicy("https://www.instagram.com").allows(target) is allowed


def test_redirect_policy_for_another_web_host_allows_only_that_host() -> None:
    policy = RedirectPolicy("http://127.0.0.1:8080")
    assert policy.allows("http://127.0.0.1:8080/ada.l/")
    assert not policy.allows("http://127.0.0.1:8081/ada.l/")
    assert not policy.allows("https://www.instagram.com/ada.l/")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("99999999", MAX_RETRY_AFTER_SECONDS),
        ("inf", RATE_BLOCK_WAIT_SECONDS),
        ("nan", RATE_BLOCK_WAIT_SECONDS),
        ("-30", RATE_BLOCK_WAIT_SECONDS),
        ("1e12", RATE_BLOCK_WAIT_SECONDS),
        ("soon", RATE_BLOCK_WAIT_SECONDS),
        ("Wed, 21 Oct 2015 07:28:00 GMT", RATE_BLOCK_WAIT_SECONDS),  # in the past
        ("Fri, 31 Dec 2199 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
    ],
)
def test_retry_after_is_parsed_safely_and_capped(
    httpserver: HTTPServer, header: str, expected: float
) -> None:
    case = load_case("scrape", "json_429_retry_after")
    case["json_response"]["headers"]["Retry-After"] = header
    serve_scrape(httpserver, case)
    with pytest.raises(ScrapeBlocked) as info:
        scraper(httpserver).fetch("sam.outdoors")
    assert info.value.retry_after == expected


def test_retry_after_http_date_is_seconds_from_now() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("Sun, 29 Nov 2026 12:10:00 GMT", 900.0, now) == 600.0
    assert retry_after_seconds(None, 900.0, now) == 900.0


def test_hostile_urls_from_the_json_endpoint_are_unknown(httpserver: HTTPServer) -> None:
    case = load_case("scrape", "json_ok_full")
    user = case["json_response"]["json"]["data"]["user"]
    user["external_url"] = "javascript:alert(document.cookie)"
    user["profile_pic_url_hd"] = "data:image/png;base64,iVBORw0KGgo="
    user["profile_pic_url"] = "https://scontent.example/" + "a" * 3000
    serve_scrape(httpserver, case)
    profile = scraper(httpserver).fetch("sam.outdoors")
    assert profile.website is None
    assert profile.profile_picture_url is None
    data = profile.to_account_fields()["instagramData"]
    assert "externalUrl" not in data and "profileImage" not in data


def test_hostile_og_image_is_unknown(httpserver: HTTPServer) -> None:
    case = load_case("scrape", "html_en_exact")
    page = (FIXTURES / "scrape" / case["html_response"]["html"]).read_text(encoding="utf-8")
    hostile = re.sub(
        r'(property="og:image" content=")[^"]*', r"\1javascript:alert(1)", page, count=1
    )
    assert hostile != page
    serve_scrape(httpserver, {**case, "html_response": None})
    httpserver.expect_request("/ada.l/").respond_with_data(hostile, content_type="text/html")
    profile = scraper(httpserver).fetch("ada.l")
    assert profile.followers_count is not None
    assert profile.profile_picture_url is None
