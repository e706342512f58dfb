"""Hostile HTTP answers against the Graph client and the scraper: bodies larger than any real
answer, a gzip bomb, and servers that trickle bytes (in the body, or in the headers, which only
a raw socket server can do). Real loopback servers throughout."""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from ig_refresh_dagster.instagram import GraphClient, InstagramError, ProfileScraper
from ig_refresh_dagster.instagram.errors import ResponseTooLarge, TransientError
from ig_refresh_dagster.instagram.scrape import SCRAPE_MAX_BYTES
from ig_refresh_dagster.instagram.transport import GRAPH_MAX_BYTES

from .helpers import (
    BUSINESS_ID,
    GRAPH_PATH,
    GRAPH_VERSION,
    JSON_PATH,
    TOKEN,
    wait_until_answered,
)

# A trickle that outlasts every deadline below many times over, but ends by itself.
TRICKLE_BYTES = 60
TRICKLE_GAP = 0.05
DEADLINE = 0.5


def _graph(base_url: str) -> Callable[[], object]:
    client = GraphClient(f"{base_url}/{GRAPH_VERSION}", BUSINESS_ID, TOKEN, timeout=DEADLINE)
    return lambda: client.fetch("acme.studio")


def _scrape(base_url: str) -> Callable[[], object]:
    scraper = ProfileScraper(base_url, timeout=DEADLINE)
    return lambda: scraper.fetch("ada.l")


CLIENTS = {
    "graph": (_graph, GRAPH_PATH, GRAPH_MAX_BYTES),
    "scrape": (_scrape, JSON_PATH, SCRAPE_MAX_BYTES),
}


def _fail(call: Callable[[], object]) -> InstagramError:
    with pytest.raises(InstagramError) as info:
        call()
    return info.value


@pytest.mark.parametrize("kind", CLIENTS)
def test_declared_oversized_answer_is_refused(httpserver: HTTPServer, kind: str) -> None:
    make, path, limit = CLIENTS[kind]
    httpserver.expect_request(path).respond_with_data(b"{" + b" " * limit + b"}")
    error = _fail(make(httpserver.url_for("").rstrip("/")))
    assert isinstance(error, ResponseTooLarge)
    assert error.reason == f"{kind}_too_large"
    assert str(limit) in error.message


@pytest.mark.parametrize("kind", CLIENTS)
def test_endless_answer_is_cut_at_the_cap(httpserver: HTTPServer, kind: str) -> None:
    """No Content-Length, a body that would never end: reading stops just past the cap."""
    make, path, limit = CLIENTS[kind]
    sent = [0]
    stop = threading.Event()

    def endless(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            chunk = b" " * 65536
            while not stop.is_set() and sent[0] < 64 * limit:
                sent[0] += len(chunk)
                yield chunk

        return Response(body(), mimetype="application/json")

    httpserver.expect_request(path).respond_with_handler(endless)
    try:
        error = _fail(make(httpserver.url_for("").rstrip("/")))
    finally:
        stop.set()
        wait_until_answered(httpserver)
    assert isinstance(error, ResponseTooLarge)
    assert sent[0] < 32 * limit


@pytest.mark.parametrize("kind", CLIENTS)
def test_gzip_bomb_is_cut_at_the_cap(httpserver: HTTPServer, kind: str) -> None:
    """A small compressed body that inflates far past the cap: the cap counts inflated bytes."""
    make, path, limit = CLIENTS[kind]
    bomb = gzip.compress(b" " * (8 * limit))
    assert len(bomb) < limit // 10
    httpserver.expect_request(path).respond_with_data(
        bomb, headers={"Content-Encoding": "gzip"}, content_type="application/json"
    )
    error = _fail(make(httpserver.url_for("").rstrip("/")))
    assert isinstance(error, ResponseTooLarge)


def nested_gzip(inflated_bytes: int, layers: int) -> bytes:
    """Zeros gzipped ``layers`` times over, built a megabyte at a time (never held inflated)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1024 * 1024)
    body = b"".join(packer.compress(chunk) for _ in range(inflated_bytes // len(chunk)))
    body += packer.flush()
    for _ in range(layers - 1):
        body = gzip.compress(body, 9)
    return body


@pytest.mark.parametrize("layers", [3, 5, 6])
@pytest.mark.parametrize("kind", CLIENTS)
def test_a_nested_gzip_bomb_is_read_in_bounded_memory(
    httpserver: HTTPServer, kind: str, layers: int
) -> None:
    """A few-kilobyte body, gzipped ``layers`` times and declared so, that inflates to 256 MiB.
    urllib3 before 2.6 inflated every layer whole per chunk (2.5.0: 458 MiB for 492 bytes);
    the pinned release inflates only what each read asks for and refuses more than 5 layers."""
    make, path, _ = CLIENTS[kind]
    bomb = nested_gzip(256 * 1024 * 1024, layers)
    assert len(bomb) < 64 * 1024
    httpserver.expect_request(path).respond_with_data(
        bomb,
        headers={"Content-Encoding": ", ".join(["gzip"] * layers)},
        content_type="application/json",
    )
    tracemalloc.start()
    try:
        error = _fail(make(httpserver.url_for("").rstrip("/")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, ResponseTooLarge if layers <= 5 else TransientError), error
    assert peak < 32 * 1024 * 1024, peak


@pytest.mark.parametrize("kind", CLIENTS)
def test_trickling_body_ends_at_the_deadline(httpserver: HTTPServer, kind: str) -> None:
    """One byte every 50 ms: each read succeeds well within any per-read timeout, so only a
    total deadline ends the request."""
    make, path, _ = CLIENTS[kind]
    stop = threading.Event()

    def trickle(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            for _ in range(TRICKLE_BYTES):
                if stop.wait(TRICKLE_GAP):
                    return
                yield b" "

        return Response(body(), mimetype="application/json")

    httpserver.expect_request(path).respond_with_handler(trickle)
    try:
        error = _fail(make(httpserver.url_for("").rstrip("/")))
    finally:
        stop.set()
        wait_until_answered(httpserver)
    assert isinstance(error, TransientError)
    assert error.reason == f"{kind}_timeout"
    assert f"within {DEADLINE:g}s" in error.message


class _TrickleHeaders(socketserver.BaseRequestHandler):
    """Answers a status line, then trickles one header byte at a time."""

    stop: threading.Event

    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(TRICKLE_BYTES):
            if self.stop.wait(TRICKLE_GAP):
                return
            try:
                self.request.sendall(b"a")
            except OSError:
                return


@pytest.fixture
def trickle_headers_url() -> Iterator[str]:
    stop = threading.Event()
    handler = type("Handler", (_TrickleHeaders,), {"stop": stop})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("kind", CLIENTS)
def test_trickling_headers_end_at_the_deadline(trickle_headers_url: str, kind: str) -> None:
    make, _, _ = CLIENTS[kind]
    error = _fail(make(trickle_headers_url))
    assert isinstance(error, TransientError)
    assert error.reason == f"{kind}_timeout"


def test_trickle_server_really_trickles(trickle_headers_url: str) -> None:
    """The raw server behaves as the header test assumes: bytes keep arriving, each well
    within a per-read timeout of DEADLINE."""
    host, port = trickle_headers_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        for _ in range(30):
            received += sock.recv(64)
    assert received.startswith(b"HTTP/1.1 200 OK\r\nX-Slow: a")
    assert b"\r\n\r\n" not in received
