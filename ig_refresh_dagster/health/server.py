"""Health sidecar on port 3053: the old consumer's endpoint plus a per-dependency readiness view.

``GET /health`` is liveness only (same body as the TypeScript consumer, touches nothing), so an
orchestrator never restarts the pipeline because Kafka or MongoDB had a bad minute. ``GET /ready``
answers 503 when Kafka (or its dead-letter topic), MongoDB, Redis, the Dagster daemon or the
refresh sensor is not usable (see ``probe``). ``GET /metrics`` is Prometheus text from a cached
snapshot (``metrics``); ``GET /accounts/<handle-or-id>/history?days=N`` is one account's follower
history as an HTML page (``history_page``). It listens on 127.0.0.1 unless ``HOST`` says
otherwise: the probe answer names internal hosts, so exposing it is a deliberate choice (the
container sets ``HOST=0.0.0.0``).

Why asyncio and not ``http.server``: the threaded stdlib server spends a thread per connection
and never times a connection out, so idle or half-sent requests (500 kept 502 threads alive)
exhaust memory. Here one event loop holds every connection (a few kilobytes each), reads each
request head within ``request_timeout_seconds`` or closes it, refuses connections beyond
``max_connections``, and answers ``/health`` on the loop itself; the blocking work (``/ready``,
``/metrics``, the history page) runs on small bounded thread pools, the history page on its
own, so neither idle sockets nor page views can delay the probes. Each connection carries one
request (HTTP/1.0 semantics, as before). No third-party server is needed for that, and the
installed ones (werkzeug) are dev-only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import re
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from types import FrameType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.history_page import HistoryReader, message_page, render_page
from ig_refresh_dagster.health.metrics import SidecarMetrics
from ig_refresh_dagster.health.probe import SERVICE, ReadinessProbe
from ig_refresh_dagster.health.redact import RedactingFormatter, scrub

log = logging.getLogger(__name__)

HEALTH_BODY = {"status": "healthy", "service": SERVICE}
ALLOWED_METHODS = "GET, HEAD"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOT_CONFIGURED_DB = "MONGODB_URI is not configured: no account history to show."
STORE_UNAVAILABLE = "The account store did not answer; try again shortly."
BAD_DAYS = "days must be a whole number of days (1 to 730)"


HISTORY_ROUTE = re.compile(r"^/accounts/(?P<key>[^/]+)/history$")
ROUTES = ["/health", "/ready", "/metrics", "/accounts/<handle-or-id>/history?days=N"]
DEFAULT_HISTORY_DAYS, MAX_HISTORY_DAYS = 90, 730
# More digits than any sensible request; a longer value is refused, not clamped.
MAX_DAYS_DIGITS = 6
JSON = "application/json"
HTML = "text/html; charset=utf-8"
# A request head (request line and headers) larger than this is refused.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_LINES = 100
# Threads for /ready and /metrics (each cached, single-flight), and for history pages.
PROBE_WORKERS, HISTORY_WORKERS = 4, 2
# File descriptors kept for everything but client connections (stores, Kafka, Dagster).
RESERVED_FDS = 256
REASONS = {status.value: status.phrase for status in HTTPStatus}


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str


def json_reply(status: int, body: Mapping[str, Any]) -> Reply:
    return Reply(status, json.dumps(body).encode(), JSON)


def html_reply(status: int, message: str) -> Reply:
    return Reply(status, message_page(message), HTML)


class BadRequest(ValueError):
    """The request head cannot be read; the message says why (never echoing the request)."""


class Request(NamedTuple):
    method: str
    target: str


async def read_request(reader: asyncio.StreamReader) -> Request:
    """The request line of a head read to its blank line (headers are read and ignored);
    raises BadRequest, or IncompleteReadError when the client leaves first."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # longer than the reader's limit
            raise BadRequest("request head too large") from None
        if not line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(line, None)
        size += len(line)
        if size > MAX_HEAD_BYTES or len(lines) > MAX_HEADER_LINES:
            raise BadRequest("request head too large")
        if line.strip() == b"":
            if lines:
                break
            continue  # a blank line before the request line is tolerated (RFC 9112 2.2)
        lines.append(line)
    parts = lines[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1].startswith("/"):
        raise BadRequest("malformed request line")
    return Request(parts[0], parts[1])


def encode(reply: Reply, with_body: bool) -> bytes:
    headers = [
        f"HTTP/1.0 {reply.status} {REASONS.get(reply.status, '')}",
        "Server: ig-refresh-health",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if reply.status == HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append(f"Allow: {ALLOWED_METHODS}")
    head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
    return head + reply.body if with_body else head


def history_days(query: dict[str, list[str]]) -> int | None:
    """``days`` clamped to 1..730; None when it is not a short run of ASCII digits."""
    raw = query.get("days", [str(DEFAULT_HISTORY_DAYS)])[-1].strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_DAYS_DIGITS):
        return None
    return min(MAX_HISTORY_DAYS, max(1, int(raw)))


def connection_limit(wanted: int) -> int:
    """``wanted``, raising the process's open-file limit toward it when allowed, and never more
    than the limit leaves after ``RESERVED_FDS``, so an accept never fails for lack of one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_FDS))


class _Service:
    """Routes a request to its reply; the blocking ones run on the pools."""

    def __init__(
        self, probe: ReadinessProbe, metrics: SidecarMetrics, history: HistoryReader | None
    ) -> None:
        self.probe, self.metrics, self.history = probe, metrics, history
        self.secrets = probe.config.secrets()
        self.probe_pool = ThreadPoolExecutor(PROBE_WORKERS, thread_name_prefix="health-probe")
        self.history_pool = ThreadPoolExecutor(HISTORY_WORKERS, thread_name_prefix="health-history")

    async def reply(self, request: Request) -> Reply:
        if request.method not in ("GET", "HEAD"):
            body = {"error": "method not allowed", "allowed": ALLOWED_METHODS}
            return json_reply(HTTPStatus.METHOD_NOT_ALLOWED, body)
        url = urlsplit(request.target)
        if url.path == "/health":
            return json_reply(HTTPStatus.OK, HEALTH_BODY)
        if url.path == "/ready":
            return await self._on(self.probe_pool, lambda: json_reply(*self.probe.run()))
        if url.path == "/metrics":
            return await self._on(
                self.probe_pool,
                lambda: Reply(HTTPStatus.OK, self.metrics.render(), CONTENT_TYPE_LATEST),
            )
        history = HISTORY_ROUTE.match(url.path)
        if history:
            key, query = unquote(history["key"]), parse_qs(url.query)
            days = history_days(query)
            if days is None:
                return html_reply(HTTPStatus.BAD_REQUEST, BAD_DAYS)
            return await self._on(self.history_pool, lambda: self._history_page(key, days))
        return json_reply(HTTPStatus.NOT_FOUND, {"error": "not found", "routes": ROUTES})

    async def _on(self, pool: ThreadPoolExecutor, work: Callable[[], Reply]) -> Reply:
        return await asyncio.get_running_loop().run_in_executor(pool, work)

    def _history_page(self, key: str, days: int) -> Reply:
        """The account's follower history page (``history_page.py``), over its own client."""
        if self.history is None:
            return html_reply(HTTPStatus.SERVICE_UNAVAILABLE, NOT_CONFIGURED_DB)
        today = datetime.datetime.now(datetime.UTC).date()
        try:
            found = self.history.load(key, days, today)
        except Exception as exc:
            log.warning("history page for %r failed: %s", key[:100], scrub(str(exc)))
            return html_reply(HTTPStatus.SERVICE_UNAVAILABLE, STORE_UNAVAILABLE)
        if found is None:
            return html_reply(HTTPStatus.NOT_FOUND, f"No account {key!r}.")
        return Reply(HTTPStatus.OK, render_page(*found, days=days).encode(), HTML)

    def close(self) -> None:
        for pool in (self.probe_pool, self.history_pool):
            pool.shutdown(wait=False, cancel_futures=True)


class _Connections:
    """The listening socket's connections: at most ``limit`` open, each one request, each
    request head read within ``timeout`` seconds or the connection is closed."""

    def __init__(self, service: _Service, limit: int, timeout: float) -> None:
        self.service, self.limit, self.timeout = service, limit, timeout
        self.open = 0
        self.refused = 0
        self._transports: set[asyncio.BaseTransport] = set()

    def abort_all(self) -> None:
        for transport in list(self._transports):
            transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.limit:
            self.refused += 1
            writer.transport.abort()
            return
        self.open += 1
        self._transports.add(writer.transport)
        try:
            await self._one_request(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # idle, half-sent, not reading, or gone: nothing more to say
        except Exception:
            log.exception("health request failed")
        finally:
            self.open -= 1
            self._transports.discard(writer.transport)
            writer.close()  # sends what is buffered, then closes; a client not reading is cut
            asyncio.get_running_loop().call_later(self.timeout, writer.transport.abort)

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The head must arrive within ``timeout``; the reply is bounded by the checks' own
        timeouts, and sending it by ``timeout`` again."""
        try:
            request = await asyncio.wait_for(read_request(reader), self.timeout)
        except BadRequest as exc:
            await self._send(writer, json_reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)}))
            return
        try:
            reply = await self.service.reply(request)
        except Exception as exc:
            log.warning("health request %s failed: %s", request.method, scrub(repr(exc)))
            reply = json_reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
        await self._send(writer, reply, with_body=request.method != "HEAD")
        log.debug("%s %s %d", request.method, scrub(request.target[:200]), reply.status)

    async def _send(
        self, writer: asyncio.StreamWriter, reply: Reply, with_body: bool = True
    ) -> None:
        writer.write(encode(reply, with_body))
        await asyncio.wait_for(writer.drain(), self.timeout)


class HealthServer:
    """The sidecar's event loop in a background thread, for the CLI, the dev stack and tests."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self.probe = ReadinessProbe(config)
        self._metrics = SidecarMetrics(config, self.probe)
        self.history = (
            HistoryReader(config.mongodb_uri, config.mongodb_database, config.check_timeout_seconds)
            if config.mongodb_uri
            else None
        )
        self._service = _Service(self.probe, self._metrics, self.history)
        self.connections = _Connections(
            self._service,
            connection_limit(config.max_connections),
            config.request_timeout_seconds,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HealthServer:
        """Binds now (raising OSError if the port is taken), then serves in a daemon thread
        with an event loop of its own: the caller may be running a loop already (Playwright's
        sync API, a notebook), so nothing here runs on the caller's thread's loop."""
        listener = socket.create_server(
            (self.config.host, self.config.port), backlog=1024, reuse_port=False
        )
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="health-http", daemon=True)
        thread.start()
        serving = asyncio.start_server(self.connections.handle, sock=listener, limit=MAX_HEAD_BYTES)
        try:
            self._server = asyncio.run_coroutine_threadsafe(serving, loop).result(timeout=30)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            listener.close()
            raise
        self._loop, self._thread = loop, thread
        return self

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None:
            raise RuntimeError("HealthServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop accepting, drop open connections, release the clients and the Dagster instance."""
        loop, server = self._loop, self._server
        if loop is not None and server is not None:
            asyncio.run_coroutine_threadsafe(_shut(server), loop).result(timeout=30)
            loop.call_soon_threadsafe(self.connections.abort_all)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if loop is not None:
            loop.close()
        self._loop = self._server = None
        self._service.close()
        self._metrics.close()
        self.probe.close()
        if self.history is not None:
            self.history.close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _shut(server: asyncio.Server) -> None:
    """Close the listener and end every connection still open (idle ones included)."""
    server.close()
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not current:
            task.cancel()


def serve(config: HealthConfig, ready_event: threading.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly and return.

    Must run in the main thread (only it can receive signals); elsewhere use ``HealthServer``.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve() must run in the main thread; use HealthServer elsewhere")
    received: list[int] = []
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = HealthServer(config).start()
        try:
            log.info(
                "health sidecar listening on http://%s:%d (%s)",
                config.host,
                server.port,
                ", ".join(ROUTES),
            )
            if ready_event is not None:
                ready_event.set()
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
        log.info("health sidecar stopped (%s)", signal.Signals(received[0]).name)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def log_uncaught_exceptions() -> None:
    """Tracebacks Python would print straight to stderr go through the (redacting) log."""

    def in_thread(args: threading.ExceptHookArgs) -> None:
        where = args.thread.name if args.thread is not None else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        log.error("uncaught exception in thread %s", where, exc_info=exc_info)  # type: ignore[arg-type]

    sys.excepthook = lambda *exc_info: log.critical("uncaught exception", exc_info=exc_info)
    threading.excepthook = in_thread


def main(argv: list[str] | None = None) -> int:
    """``ig-refresh health``: the sidecar as a foreground process."""
    parser = argparse.ArgumentParser(
        prog="ig-refresh health",
        description="health sidecar: GET /health (liveness), /ready, /metrics, account history",
    )
    parser.add_argument("--port", type=int, help="listen port (default: $PORT or 3053)")
    parser.add_argument("--host", help="listen address (default: $HOST or 127.0.0.1)")
    parser.add_argument(
        "--request-timeout",
        type=float,
        dest="request_timeout_seconds",
        help="seconds a connection has to send its request head before it is closed (10)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        dest="max_connections",
        help="connections held at once; more are closed on arrival (4096)",
    )
    args = parser.parse_args(argv)
    flags = {name: value for name, value in vars(args).items() if value is not None}
    config = HealthConfig.from_env(**flags)
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, config.secrets()))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    log_uncaught_exceptions()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster storage setup chatter
    try:
        serve(config)
    except OSError as exc:
        log.error("health sidecar cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    return 0
