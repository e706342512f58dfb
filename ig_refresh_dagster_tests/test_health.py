"""The health sidecar against real parts: valkey, the Tansu broker, litemongo, a real
``dagster-daemon`` writing heartbeats, and the ``ig-refresh health`` process itself."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ig_refresh_dagster.devstack.services import ServiceProcess, free_port
from ig_refresh_dagster.health.checks import run_checks
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.daemon import DaemonHeartbeats
from ig_refresh_dagster.health.redact import redact_uri
from ig_refresh_dagster.health.server import HealthServer
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.stores.fetch_memory import FetchMemory
from ig_refresh_dagster_tests.conftest import Topics

VENV_BIN = Path(sys.executable).parent
TOKEN = "EAAGtest-secret-token-0123456789abcdef"
CRITICAL = {"kafka", "mongodb", "redis", "dagster_daemon"}


# --- helpers -----------------------------------------------------------------------------------


def request(server: HealthServer, path: str, method: str = "GET") -> tuple[int, Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def ready(config: HealthConfig) -> tuple[int, dict[str, Any], bytes]:
    with HealthServer(config) as server:
        status, _, raw = request(server, "/ready")
    return status, json.loads(raw), raw


def failing(body: dict[str, Any]) -> set[str]:
    return {name for name, check in body["checks"].items() if not check["ok"]}


def config(**values: Any) -> HealthConfig:
    """Loopback, an ephemeral port, and nothing configured unless a test says so."""
    return HealthConfig(host="127.0.0.1", port=0, **values)


def closed_port_url(scheme: str, credentials: str = "") -> str:
    return f"{scheme}://{credentials}127.0.0.1:{free_port()}/0"


def empty_dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("")
    return path


def wait_for_heartbeats(home: Path, log_path: Path, timeout: float = 120.0) -> None:
    """The daemon's first beats arrive a few seconds after start (Dagster import included)."""
    heartbeats = DaemonHeartbeats(str(home), staleness_seconds=60)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                ok, detail = heartbeats.check(timeout=10)
            except Exception as exc:  # storage may still be initializing
                ok, detail = False, repr(exc)
            if ok:
                return
            if time.monotonic() > deadline:
                log = log_path.read_text() if log_path.exists() else ""
                raise TimeoutError(f"no daemon heartbeats: {detail}\n{log[-3000:]}")
            time.sleep(0.5)
    finally:
        heartbeats.close()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A DAGSTER_HOME with a real ``dagster-daemon run`` beating into it for the whole module."""
    home = empty_dagster_home(tmp_path_factory.mktemp("dagster_home"))
    log_path = home.parent / "daemon.log"
    daemon = ServiceProcess(
        "dagster-daemon",
        [str(VENV_BIN / "dagster-daemon"), "run", "--empty-workspace"],
        None,
        log_path,
        env={**os.environ, "DAGSTER_HOME": str(home)},
    )
    try:
        wait_for_heartbeats(home, log_path)
        yield home
    finally:
        daemon.stop()


@pytest.fixture
def healthy(
    topics: Topics,
    mongo_uri: str,
    redis_url_for_test: str,
    redis_client: redis.Redis,
    daemon_home: Path,
) -> dict[str, Any]:
    """Settings under which every dependency is up (redis_client flushes Redis first)."""
    return {
        "kafka_bootstrap_servers": topics.bootstrap,
        "refresh_topic": topics.refresh,
        "mongodb_uri": mongo_uri,
        "redis_url": redis_url_for_test,
        "dagster_home": str(daemon_home),
    }


# --- /health and routing -----------------------------------------------------------------------


def test_health_is_the_old_consumers_body_and_touches_no_dependency(tmp_path: Path) -> None:
    unreachable = config(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        redis_url=closed_port_url("redis"),
        dagster_home=str(tmp_path / "missing"),
    )
    with HealthServer(unreachable) as server:
        status, headers, raw = request(server, "/health")
        head_status, _, head_raw = request(server, "/health", method="HEAD")
    assert status == 200
    assert json.loads(raw) == {"status": "healthy", "service": "instagram-refresh"}
    assert headers["Content-Type"] == "application/json"
    assert (head_status, head_raw) == (200, b"")


def test_unknown_path_is_404_json() -> None:
    with HealthServer(config()) as server:
        status, headers, raw = request(server, "/metrics")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw)["error"] == "not found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "BREW"])
def test_methods_other_than_get_and_head_are_405(method: str) -> None:
    with HealthServer(config()) as server:
        status, headers, raw = request(server, "/health", method=method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert json.loads(raw)["error"] == "method not allowed"


# --- /ready ------------------------------------------------------------------------------------


def test_ready_when_every_dependency_is_up(healthy: dict[str, Any], topics: Topics) -> None:
    status, body, _ = ready(config(**healthy))
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["service"] == "instagram-refresh"
    assert set(body["checks"]) == CRITICAL | {"instagram_graph"}
    assert failing(body) == set()
    for check in body["checks"].values():
        assert isinstance(check["detail"], str)
        assert isinstance(check["latency_ms"], float)
    assert (
        f"topic '{topics.refresh}' exists with 3 partition(s)" in body["checks"]["kafka"]["detail"]
    )
    assert "SENSOR" in body["checks"]["dagster_daemon"]["detail"]
    assert "QUEUED_RUN_COORDINATOR" in body["checks"]["dagster_daemon"]["detail"]
    assert body["checks"]["instagram_graph"]["detail"] == "not configured"


def test_ready_503_names_redis_and_hides_its_password(healthy: dict[str, Any]) -> None:
    healthy["redis_url"] = closed_port_url("redis", credentials="admin:hunter2@")
    status, body, raw = ready(config(**healthy))
    assert status == 503
    assert body["status"] == "not_ready"
    assert failing(body) == {"redis"}
    assert "redis://***@127.0.0.1" in body["checks"]["redis"]["detail"]
    assert b"hunter2" not in raw


def test_ready_503_names_kafka_when_the_broker_port_is_closed(healthy: dict[str, Any]) -> None:
    healthy["kafka_bootstrap_servers"] = f"127.0.0.1:{free_port()}"
    status, body, _ = ready(config(**healthy))
    assert status == 503
    assert failing(body) == {"kafka"}
    assert "unreachable" in body["checks"]["kafka"]["detail"]


def test_missing_topic_is_reported_but_not_fatal(bootstrap: str) -> None:
    status, body, _ = ready(config(kafka_bootstrap_servers=bootstrap, refresh_topic="no-such"))
    assert "kafka" not in failing(body)
    assert "topic 'no-such' does not exist yet" in body["checks"]["kafka"]["detail"]
    assert status == 503  # the other dependencies are not configured


def test_ready_503_names_dagster_daemon_without_heartbeats(
    healthy: dict[str, Any], tmp_path: Path
) -> None:
    healthy["dagster_home"] = str(empty_dagster_home(tmp_path / "dagster_home"))
    status, body, _ = ready(config(**healthy))
    assert status == 503
    assert failing(body) == {"dagster_daemon"}
    detail = body["checks"]["dagster_daemon"]["detail"]
    assert "SENSOR (no heartbeat)" in detail
    assert "QUEUED_RUN_COORDINATOR (no heartbeat)" in detail


def test_unset_settings_fail_as_not_configured() -> None:
    status, body, _ = ready(config())
    assert status == 503
    checks = body["checks"]
    assert failing(body) == CRITICAL
    for name in ("kafka", "redis", "mongodb"):
        assert checks[name]["detail"] == "not configured"
    assert "DAGSTER_HOME is not set" in checks["dagster_daemon"]["detail"]
    assert (checks["instagram_graph"]["ok"], checks["instagram_graph"]["detail"]) == (
        True,
        "not configured",
    )


def test_graph_disabled_is_shown_and_the_token_never_is(
    healthy: dict[str, Any], redis_client: redis.Redis
) -> None:
    cfg = config(**healthy, instagram_access_token=TOKEN)
    with HealthServer(cfg) as server:
        _, _, before = request(server, "/ready")
        # A reason that (wrongly) embeds the token must still not leak it.
        reason = f"OAuthException 190: session for {TOKEN} has expired"
        FetchMemory(redis_client).disable_graph(token_fingerprint(TOKEN), reason)
        status, _, after = request(server, "/ready")
    enabled = json.loads(before)["checks"]["instagram_graph"]
    assert (enabled["ok"], enabled["detail"]) == (True, "enabled")
    graph = json.loads(after)["checks"]["instagram_graph"]
    assert graph["ok"] is False
    assert graph["detail"] == "disabled: OAuthException 190: session for *** has expired"
    assert status == 200  # informational: scraping still works
    assert TOKEN.encode() not in before + after
    assert token_fingerprint(TOKEN).encode() not in before + after


def test_a_hung_dependency_cannot_hang_ready(healthy: dict[str, Any]) -> None:
    """Redis that accepts connections and never answers (nobody calls accept())."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        healthy["redis_url"] = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        status, body, _ = ready(config(**healthy, check_timeout_seconds=1.0))
    assert status == 503
    assert failing(body) == {"redis"}
    assert "timeout" in body["checks"]["redis"]["detail"].lower()


def test_run_checks_reports_a_check_past_its_deadline_as_timed_out() -> None:
    release = threading.Event()

    def stuck() -> tuple[bool, str]:
        release.wait()
        return True, "finished"

    try:
        results = run_checks({"stuck": stuck, "quick": lambda: (True, "fine")}, timeout=0.3)
    finally:
        release.set()
    assert results["stuck"].ok is False
    assert results["stuck"].detail == "timed out after 0.3s"
    assert (results["quick"].ok, results["quick"].detail) == (True, "fine")


def test_a_raising_check_is_reported_not_propagated() -> None:
    def broken() -> tuple[bool, str]:
        raise ValueError("bad URI scheme")

    result = run_checks({"broken": broken}, timeout=5)["broken"]
    assert (result.ok, result.detail) == (False, "ValueError: bad URI scheme")


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://app:s3cr3t@db:27017/x", "mongodb://***@db:27017/x"),
        (
            "mongodb+srv://app:p@ss@cluster.example/x?tls=true",
            "mongodb+srv://***@cluster.example/x?tls=true",
        ),
        ("redis://:onlypass@cache:6379/0", "redis://***@cache:6379/0"),
        ("litemongo:///srv/data/mongo", "litemongo:///srv/data/mongo"),
        ("see redis://u:p@h:1/0 and mongodb://h2", "see redis://***@h:1/0 and mongodb://h2"),
    ],
)
def test_redact_uri_hides_credentials(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


# --- configuration and the process -------------------------------------------------------------


def test_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("MONGODB_URI", "mongodb://db:27017")
    monkeypatch.setenv("INSTAGRAM_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("PORT", "4000")
    monkeypatch.delenv("INSTAGRAM_REFRESH_TOPIC", raising=False)
    monkeypatch.delenv("MONGODB_DATABASE", raising=False)
    cfg = HealthConfig.from_env(host="127.0.0.1")
    assert (cfg.kafka_bootstrap_servers, cfg.redis_url) == ("kafka-1:9092", "redis://cache:6379/0")
    assert (cfg.mongodb_uri, cfg.mongodb_database) == ("mongodb://db:27017", "ratecreator")
    assert cfg.refresh_topic == "data-refresh-instagram"
    assert (cfg.port, cfg.host, cfg.dagster_home) == (4000, "127.0.0.1", str(tmp_path))
    assert TOKEN not in repr(cfg)
    monkeypatch.delenv("PORT")
    assert HealthConfig.from_env().port == 3053
    assert HealthConfig.from_env().host == "127.0.0.1"


def health_command() -> list[str]:
    script = VENV_BIN / "ig-refresh"
    if (Path(__file__).parents[1] / "ig_refresh_dagster" / "cli.py").exists() and script.exists():
        return [str(script), "health"]
    code = "import sys; from ig_refresh_dagster.health.server import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def test_cli_serves_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "health.log"
    env = {**os.environ, "IG_REFRESH_DATA_DIR": str(tmp_path / "data")}
    sidecar = ServiceProcess(
        "health",
        [*health_command(), "--port", str(port), "--host", "127.0.0.1"],
        port,
        log_path,
        env=env,
        start_timeout=60,
    )
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())["status"]) == (200, "healthy")
        conn.close()
    finally:
        exit_code = sidecar.stop(timeout=30)  # SIGTERM; SIGKILL (exit -9) only after 30 s
    assert exit_code == 0, log_path.read_text()
    log = log_path.read_text()
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "health sidecar stopped (SIGTERM)" in log
