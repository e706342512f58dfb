"""Health sidecar on port 3053: the old consumer's endpoint plus a per-dependency readiness view.

``GET /health`` is liveness only (same body as the TypeScript consumer, touches nothing), so an
orchestrator never restarts the pipeline because Kafka or MongoDB had a bad minute. ``GET /ready``
answers 503 when Kafka (or its dead-letter topic), MongoDB, Redis, the Dagster daemon or the
refresh sensor is not usable (see ``probe``). ``GET /metrics`` is Prometheus text from a cached
snapshot (``metrics``); ``GET /accounts/<handle-or-id>/history?days=N`` is one account's follower
history as an HTML page (``history_page``). It listens on 127.0.0.1 unless ``HOST`` says
otherwise: the probe answer names internal hosts, so exposing it is a deliberate choice (the
container sets ``HOST=0.0.0.0``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import re
import signal
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.history_page import load_history, message_page, render_page
from ig_refresh_dagster.health.metrics import SidecarMetrics
from ig_refresh_dagster.health.probe import SERVICE, ReadinessProbe
from ig_refresh_dagster.health.redact import RedactingFormatter, scrub

log = logging.getLogger(__name__)

HEALTH_BODY = {"status": "healthy", "service": SERVICE}
ALLOWED_METHODS = "GET, HEAD"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOT_CONFIGURED_DB = "MONGODB_URI is not configured: no account history to show."
STORE_UNAVAILABLE = "The account store did not answer; try again shortly."


HISTORY_ROUTE = re.compile(r"^/accounts/(?P<key>[^/]+)/history$")
ROUTES = ["/health", "/ready", "/metrics", "/accounts/<handle-or-id>/history?days=N"]
DEFAULT_HISTORY_DAYS, MAX_HISTORY_DAYS = 90, 730
JSON = "application/json"
HTML = "text/html; charset=utf-8"


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str


def json_reply(status: int, body: Mapping[str, Any]) -> Reply:
    return Reply(status, json.dumps(body).encode(), JSON)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes a burst of probes wait for SYN retransmits (1 s and up).
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], probe: ReadinessProbe, metrics: SidecarMetrics
    ) -> None:
        super().__init__(address, _Handler)
        self.probe = probe
        self.metrics = metrics


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ig-refresh-health"

    def do_GET(self) -> None:
        self._respond(self._route(), with_body=True)

    def do_HEAD(self) -> None:
        self._respond(self._route(), with_body=False)

    def __getattr__(self, name: str) -> Any:
        """Every other method (POST, PUT, even made-up ones) gets 405 rather than 501."""
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        body = {"error": "method not allowed", "allowed": ALLOWED_METHODS}
        self._respond(json_reply(HTTPStatus.METHOD_NOT_ALLOWED, body), with_body=True)

    def _route(self) -> Reply:
        url = urlsplit(self.path)
        if url.path == "/health":
            return json_reply(HTTPStatus.OK, HEALTH_BODY)
        if url.path == "/ready":
            return json_reply(*self.server.probe.run())
        if url.path == "/metrics":
            return Reply(HTTPStatus.OK, self.server.metrics.render(), CONTENT_TYPE_LATEST)
        history = HISTORY_ROUTE.match(url.path)
        if history:
            return self._history(unquote(history["key"]), parse_qs(url.query))
        return json_reply(HTTPStatus.NOT_FOUND, {"error": "not found", "routes": ROUTES})

    def _history(self, key: str, query: dict[str, list[str]]) -> Reply:
        """The account's follower history page (``history_page.py``), over the kept client."""
        raw_days = query.get("days", [str(DEFAULT_HISTORY_DAYS)])[-1]
        if not raw_days.strip().isdigit():
            return Reply(HTTPStatus.BAD_REQUEST, message_page("days must be a whole number"), HTML)
        days = min(MAX_HISTORY_DAYS, max(1, int(raw_days)))
        config, mongo = self.server.probe.config, self.server.probe.mongo
        if mongo is None:
            return Reply(HTTPStatus.SERVICE_UNAVAILABLE, message_page(NOT_CONFIGURED_DB), HTML)
        today = datetime.datetime.now(datetime.UTC).date()
        try:
            found = mongo.use(
                lambda c: load_history(c[config.mongodb_database], key, days, today),
                config.check_timeout_seconds,
            )
        except Exception as exc:
            log.warning(
                "history page for %r failed: %s", key[:100], scrub(str(exc), config.secrets())
            )
            return Reply(HTTPStatus.SERVICE_UNAVAILABLE, message_page(STORE_UNAVAILABLE), HTML)
        if found is None:
            return Reply(HTTPStatus.NOT_FOUND, message_page(f"No account {key!r}."), HTML)
        return Reply(HTTPStatus.OK, render_page(*found, days=days).encode(), HTML)

    def _respond(self, reply: Reply, with_body: bool) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        if reply.status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ALLOWED_METHODS)
        self.end_headers()
        if with_body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes hit every few seconds: keep the access log out of the service log."""
        log.debug("%s %s", self.address_string(), format % args)


class HealthServer:
    """The sidecar in a background thread, for the CLI, the dev stack and tests."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._probe = ReadinessProbe(config)
        self._metrics = SidecarMetrics(config, self._probe)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HealthServer:
        """Binds now (raising OSError if the port is taken), then serves in a daemon thread."""
        self._httpd = _Server((self.config.host, self.config.port), self._probe, self._metrics)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="health-http"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._httpd is None:
            raise RuntimeError("HealthServer is not started")
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        """Stop accepting, close the listening socket, release the Dagster instance."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._metrics.close()
        self._probe.close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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


def main(argv: list[str] | None = None) -> int:
    """``ig-refresh health``: the sidecar as a foreground process."""
    parser = argparse.ArgumentParser(
        prog="ig-refresh health",
        description="health sidecar: GET /health (liveness), /ready, /metrics, account history",
    )
    parser.add_argument("--port", type=int, help="listen port (default: $PORT or 3053)")
    parser.add_argument("--host", help="listen address (default: $HOST or 127.0.0.1)")
    args = parser.parse_args(argv)
    flags = {name: value for name, value in vars(args).items() if value is not None}
    config = HealthConfig.from_env(**flags)
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, config.secrets()))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster storage setup chatter
    try:
        serve(config)
    except OSError as exc:
        log.error("health sidecar cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    return 0
