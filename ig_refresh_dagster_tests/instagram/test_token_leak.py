"""The access token must never appear in an exception, a note, a log record, Redis, or a URL,
whatever Graph answers (Graph's own messages can quote a malformed token back)."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable

import pytest
import redis
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from ig_refresh_dagster.instagram import GraphClient, InstagramError, ProfileFetcher
from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster.stores.fetch_memory import FetchMemory

from .helpers import (
    BUSINESS_ID,
    GRAPH_PATH,
    GRAPH_VERSION,
    pool_of,
    scraper,
    wait_until_answered,
)

SECRET = "EAAGleakCHECK0123456789abcdefSECRET"


def _graph_error(code: int, status: int = 400) -> Callable[[HTTPServer], None]:
    def install(server: HTTPServer) -> None:
        server.expect_request(GRAPH_PATH).respond_with_json(
            {
                "error": {
                    "message": f"Malformed access token {SECRET} (code {code})",
                    "type": "OAuthException",
                    "code": code,
                    "fbtrace_id": f"trace-{SECRET}",
                }
            },
            status=status,
        )

    return install


def _echo_body(server: HTTPServer) -> None:
    server.expect_request(GRAPH_PATH).respond_with_data(
        f"<html>upstream said: Authorization: Bearer {SECRET}</html>", status=502
    )


def _echo_header(server: HTTPServer) -> None:
    def handler(request: Request) -> Response:
        return Response(request.headers.get("Authorization", ""), status=500)

    server.expect_request(GRAPH_PATH).respond_with_handler(handler)


SCENARIOS = {
    "auth_error_quoting_token": _graph_error(190),
    "rate_limit_quoting_token": _graph_error(4),
    "not_business_quoting_token": _graph_error(110),
    "transient_quoting_token": _graph_error(2, status=503),
    "permanent_quoting_token": _graph_error(100),
    "non_json_body_with_token": _echo_body,
    "server_echoes_authorization": _echo_header,
}


def _assert_clean(text: str) -> None:
    assert SECRET not in text
    assert SECRET[:16] not in text


def _check_everything(
    error: InstagramError | None,
    notes: list[str],
    caplog: pytest.LogCaptureFixture,
    client: redis.Redis,
    server: HTTPServer | None,
) -> None:
    if error is not None:
        _assert_clean(str(error))
        _assert_clean(repr(error))
        _assert_clean(error.message)
        _assert_clean("".join(traceback.format_exception(error)))
    for note in notes:
        _assert_clean(note)
    for record in caplog.records:
        _assert_clean(record.getMessage())
        _assert_clean(str(record.args))
        if record.exc_info:
            _assert_clean("".join(traceback.format_exception(*record.exc_info)))
    for key in client.scan_iter():
        _assert_clean(key.decode())
        if client.type(key) == b"string":
            _assert_clean((client.get(key) or b"").decode())
    if server is not None:
        for request, _ in server.log:
            _assert_clean(request.url)


def _fetcher(graph: GraphClient, server: HTTPServer, client: redis.Redis) -> ProfileFetcher:
    memory = FetchMemory(client)
    return ProfileFetcher(
        pool_of(graph, HourlyBudget(client, "graph", 100), memory),
        scraper(server),
        HourlyBudget(client, "scrape", 100),
        memory,
    )


@pytest.mark.parametrize("install", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_token_never_leaks_through_graph_failures(
    httpserver: HTTPServer,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    install: Callable[[HTTPServer], None],
) -> None:
    caplog.set_level(logging.DEBUG)
    install(httpserver)
    # scraping fails too, so the fetch ends in an error that carries every note
    httpserver.expect_request("/api/v1/users/web_profile_info/").respond_with_data(
        "down", status=500
    )
    graph = GraphClient(httpserver.url_for(f"/{GRAPH_VERSION}"), BUSINESS_ID, SECRET)
    with pytest.raises(InstagramError) as info:
        _fetcher(graph, httpserver, redis_client).fetch("acme.studio")
    logging.getLogger("leak-check").exception("fetch failed", exc_info=info.value)
    _check_everything(info.value, info.value.notes, caplog, redis_client, httpserver)

    with pytest.raises(InstagramError) as direct:
        graph.fetch("acme.studio")
    _check_everything(direct.value, [], caplog, redis_client, httpserver)


def test_token_never_leaks_on_connection_errors(
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    unused_port: int,
    httpserver: HTTPServer,
) -> None:
    caplog.set_level(logging.DEBUG)
    graph = GraphClient(f"http://127.0.0.1:{unused_port}/{GRAPH_VERSION}", BUSINESS_ID, SECRET)
    with pytest.raises(InstagramError) as info:
        graph.fetch("acme.studio")
    _check_everything(info.value, [], caplog, redis_client, None)


def test_token_never_leaks_on_timeouts(
    httpserver: HTTPServer, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(5)
        return Response("{}", mimetype="application/json")

    httpserver.expect_request(GRAPH_PATH).respond_with_handler(slow)
    graph = GraphClient(httpserver.url_for(f"/{GRAPH_VERSION}"), BUSINESS_ID, SECRET, timeout=0.2)
    try:
        with pytest.raises(InstagramError) as info:
            graph.fetch("acme.studio")
    finally:
        release.set()
        wait_until_answered(httpserver)
    _check_everything(info.value, [], caplog, redis_client, httpserver)


def test_fingerprint_not_token_is_stored(
    httpserver: HTTPServer, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    _graph_error(190)(httpserver)
    httpserver.expect_request("/api/v1/users/web_profile_info/").respond_with_data(
        "down", status=500
    )
    graph = GraphClient(httpserver.url_for(f"/{GRAPH_VERSION}"), BUSINESS_ID, SECRET)
    fetcher = _fetcher(graph, httpserver, redis_client)
    with pytest.raises(InstagramError):
        fetcher.fetch("acme.studio")
    reason = fetcher.graph_status()
    assert reason is not None and "[token]" in reason
    assert any(graph.token_fingerprint in k.decode() for k in redis_client.scan_iter())
    _check_everything(None, [reason], caplog, redis_client, httpserver)


def test_token_shaped_strings_are_scrubbed_too(httpserver: HTTPServer) -> None:
    other = "EAAB" + "x9" * 20
    httpserver.expect_request(GRAPH_PATH).respond_with_json(
        {"error": {"message": f"Malformed access token {other[:30]}", "code": 190}}, status=400
    )
    graph = GraphClient(httpserver.url_for(f"/{GRAPH_VERSION}"), BUSINESS_ID, SECRET)
    with pytest.raises(InstagramError) as info:
        graph.fetch("acme.studio")
    assert other[:30] not in str(info.value)
    assert "[token]" in str(info.value)
