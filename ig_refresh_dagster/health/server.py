"""Health sidecar on port 3053: the old consumer's endpoint plus a per-dependency readiness view.

``GET /health`` is liveness only (same body as the TypeScript consumer, touches nothing), so an
orchestrator never restarts the pipeline because Kafka or MongoDB had a bad minute. ``GET /ready``
answers 503 when Kafka (or its dead-letter topic), MongoDB, Redis, the Dagster daemon or the
refresh sensor is not usable (see ``probe``). It listens on 127.0.0.1 unless ``HOST`` says
otherwise: the probe answer names internal hosts, so exposing it is a deliberate choice (the
container sets ``HOST=0.0.0.0``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.probe import SERVICE, ReadinessProbe
from ig_refresh_dagster.health.redact import RedactingFormatter

log = logging.getLogger(__name__)

HEALTH_BODY = {"status": "healthy", "service": SERVICE}
ALLOWED_METHODS = "GET, HEAD"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes a burst of probes wait for SYN retransmits (1 s and up).
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], probe: ReadinessProbe) -> None:
        super().__init__(address, _Handler)
        self.probe = probe


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ig-refresh-health"

    def do_GET(self) -> None:
        self._respond(*self._route(), with_body=True)

    def do_HEAD(self) -> None:
        self._respond(*self._route(), with_body=False)

    def __getattr__(self, name: str) -> Any:
        """Every other method (POST, PUT, even made-up ones) gets 405 rather than 501."""
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        body = {"error": "method not allowed", "allowed": ALLOWED_METHODS}
        self._respond(HTTPStatus.METHOD_NOT_ALLOWED, body, with_body=True)

    def _route(self) -> tuple[int, dict[str, Any]]:
        path = urlsplit(self.path).path
        if path == "/health":
            return HTTPStatus.OK, HEALTH_BODY
        if path == "/ready":
            return self.server.probe.run()
        return HTTPStatus.NOT_FOUND, {"error": "not found", "routes": ["/health", "/ready"]}

    def _respond(self, status: int, body: Mapping[str, Any], with_body: bool) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ALLOWED_METHODS)
        self.end_headers()
        if with_body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes hit every few seconds: keep the access log out of the service log."""
        log.debug("%s %s", self.address_string(), format % args)


class HealthServer:
    """The sidecar in a background thread, for the CLI, the dev stack and tests."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._probe = ReadinessProbe(config)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HealthServer:
        """Binds now (raising OSError if the port is taken), then serves in a daemon thread."""
        self._httpd = _Server((self.config.host, self.config.port), self._probe)
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
                "health sidecar listening on http://%s:%d (/health, /ready)",
                config.host,
                server.port,
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
        prog="ig-refresh health", description="health sidecar: GET /health (liveness), /ready"
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
