"""Health sidecar: the old consumer's port-3053 endpoint, plus a per-dependency readiness view.

``GET /health`` is liveness only (same body as the TypeScript consumer, touches nothing), so an
orchestrator never restarts the pipeline because Kafka or MongoDB had a bad minute. ``GET /ready``
checks every dependency concurrently, each bounded by a timeout, so one hung dependency cannot hang
the probe; it answers 503 when Kafka, MongoDB, Redis or the Dagster daemon is not usable.

Client libraries and Dagster are imported inside the checks: importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

log = logging.getLogger(__name__)

SERVICE = "instagram-refresh"
HEALTH_BODY = {"status": "healthy", "service": SERVICE}
# Dependencies without which the pipeline cannot make progress; instagram_graph is informational
# because the fetcher falls back to scraping when Graph is unavailable.
CRITICAL_CHECKS = ("kafka", "mongodb", "redis", "dagster_daemon")
NOT_CONFIGURED = "not configured"
ALLOWED_METHODS = "GET, HEAD"
MAX_DETAIL_CHARS = 300
# Greedy up to the last "@" before the path, so a password containing "@" is hidden entirely.
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#]*@")

Check = Callable[[], tuple[bool, str]]


class HealthConfig(BaseModel):
    """Where the sidecar looks; built from the same settings table as the pipeline."""

    kafka_bootstrap_servers: str | None = None
    refresh_topic: str = "data-refresh-instagram"
    mongodb_uri: str | None = None
    mongodb_database: str = "ratecreator"
    redis_url: str | None = None
    instagram_access_token: SecretStr | None = None
    dagster_home: str | None = None
    port: int = 3053
    host: str = "0.0.0.0"
    check_timeout_seconds: float = 3.0
    daemon_staleness_seconds: float = 60.0

    @classmethod
    def from_env(cls, **overrides: Any) -> HealthConfig:
        """Environment first, project defaults second; ``overrides`` (CLI flags) win."""
        from ig_refresh_dagster.settings import resolved

        values: dict[str, Any] = {
            "kafka_bootstrap_servers": resolved("KAFKA_BOOTSTRAP_SERVERS"),
            "refresh_topic": resolved("INSTAGRAM_REFRESH_TOPIC"),
            "mongodb_uri": resolved("MONGODB_URI"),
            "mongodb_database": resolved("MONGODB_DATABASE"),
            "redis_url": resolved("REDIS_URL"),
            "instagram_access_token": resolved("INSTAGRAM_ACCESS_TOKEN"),
            "dagster_home": os.environ.get("DAGSTER_HOME") or None,
            "port": int(resolved("PORT") or 3053),
        }
        values.update(overrides)
        return cls(**values)


class CheckResult(BaseModel):
    ok: bool
    detail: str
    latency_ms: float


# --- redaction ---------------------------------------------------------------------------------


def redact_uri(text: str) -> str:
    """Hide ``user:password@`` in every URI inside ``text`` (details and errors echo URIs)."""
    return _URI_CREDENTIALS.sub(r"\g<scheme>***@", text)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """One short line with no credentials: what a probe response or a log line may carry."""
    cleaned = redact_uri(" ".join(text.split()))
    for secret in secrets:
        if secret:
            cleaned = cleaned.replace(secret, "***")
    if len(cleaned) > MAX_DETAIL_CHARS:
        cleaned = cleaned[: MAX_DETAIL_CHARS - 1] + "…"
    return cleaned


# --- running checks ----------------------------------------------------------------------------


def run_checks(checks: Mapping[str, Check], timeout: float) -> dict[str, CheckResult]:
    """Run every check at once in daemon threads and wait at most ``timeout`` for all of them.

    A check still running at the deadline is reported as timed out and left to finish on its
    own (each client has its own timeout too); daemon threads never block process exit.
    """
    results: dict[str, CheckResult] = {}

    def run(name: str, check: Check) -> None:
        started = time.perf_counter()
        try:
            ok, detail = check()
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results[name] = CheckResult(ok=ok, detail=detail, latency_ms=_ms_since(started))

    threads = {
        name: threading.Thread(target=run, args=(name, check), name=f"ready-{name}", daemon=True)
        for name, check in checks.items()
    }
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name) or _timed_out(timeout) for name in checks}


def _timed_out(timeout: float) -> CheckResult:
    return CheckResult(
        ok=False, detail=f"timed out after {timeout:g}s", latency_ms=round(timeout * 1000, 1)
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


# --- the checks --------------------------------------------------------------------------------


def check_kafka(bootstrap_servers: str | None, topic: str, timeout: float) -> tuple[bool, str]:
    """Metadata from the brokers; a missing topic is reported but not fatal (the sensor waits)."""
    if not bootstrap_servers:
        return False, NOT_CONFIGURED
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap_servers,
            "socket.timeout.ms": max(1000, int(timeout * 1000)),
            # librdkafka would print every refused connection to stderr; route it to logging.
            "logger": logging.getLogger("ig_refresh_dagster.health.kafka"),
        }
    )
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return False, f"{bootstrap_servers} unreachable: {exc.args[0].str()}"
    brokers = f"{len(metadata.brokers)} broker(s) at {bootstrap_servers}"
    found = metadata.topics.get(topic)
    if found is None:
        return True, f"{brokers}; topic {topic!r} does not exist yet"
    if found.error is not None:
        return True, f"{brokers}; topic {topic!r}: {found.error.str()}"
    return True, f"{brokers}; topic {topic!r} exists with {len(found.partitions)} partition(s)"


def check_mongodb(uri: str | None, database: str, timeout: float) -> tuple[bool, str]:
    """``ping`` on MongoDB; the embedded litemongo store has no server, so list its collections."""
    if not uri:
        return False, NOT_CONFIGURED
    from ig_refresh_dagster.stores.mongo import open_client

    client = open_client(uri, timeout_ms=max(1, int(timeout * 1000)))
    try:
        if urlsplit(uri).scheme in ("mongodb", "mongodb+srv"):
            client.admin.command("ping")
            return True, f"ping ok ({redact_uri(uri)})"
        names = client[database].list_collection_names()
        return True, f"{len(names)} collection(s) in {database!r} ({redact_uri(uri)})"
    finally:
        client.close()


def _redis_client(url: str, timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def check_redis(url: str | None, timeout: float) -> tuple[bool, str]:
    if not url:
        return False, NOT_CONFIGURED
    import redis

    client = _redis_client(url, timeout)
    try:
        client.ping()
        return True, f"PONG from {redact_uri(url)}"
    except redis.RedisError as exc:
        return False, f"{redact_uri(url)} unreachable: {exc}"
    finally:
        client.close()


def check_instagram_graph(
    token: str | None, redis_url: str | None, timeout: float
) -> tuple[bool, str]:
    """Whether the fetcher has switched Graph off for this token (it then only scrapes)."""
    if not token:
        return True, NOT_CONFIGURED
    if not redis_url:
        return False, "unknown: REDIS_URL not configured"
    import redis

    from ig_refresh_dagster.instagram.graph import token_fingerprint
    from ig_refresh_dagster.stores.fetch_memory import FetchMemory

    client = _redis_client(redis_url, timeout)
    try:
        client.ping()  # FetchMemory reads "nothing remembered" when Redis is down: not "enabled"
        reason = FetchMemory(client).graph_disabled_reason(token_fingerprint(token))
    except redis.RedisError as exc:
        return False, f"unknown: Redis unreachable ({exc})"
    finally:
        client.close()
    if reason:
        return False, f"disabled: {reason}"
    return True, "enabled"


class DaemonHeartbeats:
    """The Dagster daemon is alive when every daemon the instance needs beat recently.

    The instance is opened once and kept: opening storage on every probe costs more than the
    check. Access is serialized; a probe that finds a previous one still stuck reports that.
    """

    def __init__(self, dagster_home: str | None, staleness_seconds: float) -> None:
        self._home = dagster_home
        self._staleness = staleness_seconds
        self._lock = threading.Lock()
        self._instance: Any = None

    def check(self, timeout: float) -> tuple[bool, str]:
        if not self._lock.acquire(timeout=timeout):
            return False, "previous heartbeat check still running"
        try:
            instance = self._instance or self._open()
            required = set(instance.get_required_daemon_types()) | {"SENSOR"}
            return self._judge(sorted(required), instance.get_daemon_heartbeats(), time.time())
        finally:
            self._lock.release()

    def _open(self) -> Any:
        """``DagsterInstance.get()``'s rules, applied to the configured DAGSTER_HOME."""
        if not self._home:
            raise RuntimeError("DAGSTER_HOME is not set")
        if not os.path.isabs(self._home) or not os.path.isdir(self._home):
            raise RuntimeError(f"DAGSTER_HOME {self._home!r} is not an existing absolute directory")
        from dagster import DagsterInstance

        self._instance = DagsterInstance.from_config(self._home)
        return self._instance

    def _judge(
        self, required: list[str], heartbeats: Mapping[str, Any], now: float
    ) -> tuple[bool, str]:
        stale: list[str] = []
        erroring: list[str] = []
        for daemon_type in required:
            beat = heartbeats.get(daemon_type)
            if beat is None:
                stale.append(f"{daemon_type} (no heartbeat)")
            elif now - beat.timestamp > self._staleness:
                stale.append(f"{daemon_type} (last beat {now - beat.timestamp:.0f}s ago)")
            elif beat.errors:
                erroring.append(daemon_type)
        if stale:
            return False, f"stale (>{self._staleness:g}s): {', '.join(stale)}"
        detail = f"{len(required)} daemon(s) beating: {', '.join(required)}"
        if erroring:
            detail += f"; reporting errors: {', '.join(erroring)}"
        return True, detail

    def close(self, timeout: float = 5.0) -> None:
        """Release storage; a check stuck past ``timeout`` must not block shutdown, so skip."""
        if not self._lock.acquire(timeout=timeout):
            log.warning("Dagster instance still in use at shutdown; not disposing it")
            return
        try:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None
        finally:
            self._lock.release()


class ReadinessProbe:
    """Builds the ``/ready`` answer: every check concurrently, results scrubbed of secrets."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._daemon = DaemonHeartbeats(config.dagster_home, config.daemon_staleness_seconds)
        self._last_graph_detail: str | None = None

    def _token(self) -> str | None:
        token = self.config.instagram_access_token
        return token.get_secret_value() if token is not None else None

    def checks(self) -> dict[str, Check]:
        c, timeout = self.config, self.config.check_timeout_seconds
        # Client-side timeouts a little under the probe's, so a real error usually wins the race.
        inner = timeout * 0.8
        return {
            "kafka": lambda: check_kafka(c.kafka_bootstrap_servers, c.refresh_topic, inner),
            "mongodb": lambda: check_mongodb(c.mongodb_uri, c.mongodb_database, inner),
            "redis": lambda: check_redis(c.redis_url, inner),
            "dagster_daemon": lambda: self._daemon.check(inner),
            "instagram_graph": lambda: check_instagram_graph(self._token(), c.redis_url, inner),
        }

    def run(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 503 unless every critical dependency is ok."""
        results = run_checks(self.checks(), self.config.check_timeout_seconds)
        secrets = [s for s in [self._token()] if s]
        for result in results.values():
            result.detail = scrub(result.detail, secrets)
        self._log_graph_change(results["instagram_graph"])
        ready = all(results[name].ok for name in CRITICAL_CHECKS)
        body = {
            "status": "ready" if ready else "not_ready",
            "service": SERVICE,
            "checks": {name: result.model_dump() for name, result in results.items()},
        }
        return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), body

    def _log_graph_change(self, graph: CheckResult) -> None:
        """Shout once when Graph is switched off (not on every probe), and say when it is back."""
        if graph.detail == self._last_graph_detail:
            return
        if graph.detail.startswith("disabled:"):
            log.warning("Instagram Graph API is OFF for the configured token: %s", graph.detail)
        elif self._last_graph_detail is not None:
            log.info("Instagram Graph API status: %s", graph.detail)
        self._last_graph_detail = graph.detail

    def close(self) -> None:
        self._daemon.close()


# --- HTTP --------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

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
    parser.add_argument("--host", help="listen address (default: 0.0.0.0)")
    args = parser.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Dagster storage setup chatter
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    flags = {name: value for name, value in vars(args).items() if value is not None}
    config = HealthConfig.from_env(**flags)
    try:
        serve(config)
    except OSError as exc:
        log.error("health sidecar cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    return 0
