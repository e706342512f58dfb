"""The health sidecar against real parts: valkey, the Tansu broker, litemongo, a real
``dagster-daemon`` running the real refresh sensor, and the ``ig-refresh health`` process."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dagster import DagsterInstance

from ig_refresh_dagster.devstack.services import ServiceProcess, free_port, start_valkey
from ig_refresh_dagster.devstack.stack import EMBEDDED_BROKER_FETCH_WAIT_MS, PROJECT_ROOT
from ig_refresh_dagster.health.checks import run_checks
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.daemon import DagsterInstanceView, SensorHistory, SensorTick
from ig_refresh_dagster.health.dagster_checks import DaemonCheck, SensorCheck, judge_sensor
from ig_refresh_dagster.health.redact import RedactingFormatter, redact_uri
from ig_refresh_dagster.health.server import LOG_FORMAT, HealthServer
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.refresh.launch.intake_sensor import instagram_refresh_sensor
from ig_refresh_dagster.stores.fetch_memory import FetchMemory
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.kafka_front_door import KafkaFrontDoor
from ig_refresh_dagster_tests.support.sidecar_http import request

VENV_BIN = Path(sys.executable).parent
TOKEN = "EAAGtest-secret-token-0123456789abcdef"
BUSINESS_ID = "17841400000000001"
CRITICAL = {"kafka", "mongodb", "redis", "budget_redis", "dagster_daemon", "refresh_sensor"}


# --- helpers -----------------------------------------------------------------------------------


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
    """A DAGSTER_HOME whose SQLite storage exists before any daemon starts: two processes that
    create it at the same moment can both stamp its schema version, which breaks it for good."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    DagsterInstance.from_config(str(path)).dispose()
    return path


def start_daemon(home: Path, env: dict[str, str], log_path: Path) -> ServiceProcess:
    """``dagster-daemon run`` on the real workspace: the real refresh sensor ticks in it."""
    return ServiceProcess(
        "dagster-daemon",
        [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        None,
        log_path,
        env={"PATH": f"{VENV_BIN}:/usr/bin:/bin", "DAGSTER_HOME": str(home), **env},
        cwd=PROJECT_ROOT,
    )


def wait_for_sensor(home: Path, log_path: Path, wanted: str, timeout: float = 150.0) -> None:
    """Until the daemon beats and the sensor check's detail contains ``wanted``."""
    view = DagsterInstanceView(str(home))
    daemon = DaemonCheck(view, staleness_seconds=60, timeout=10)
    sensor = SensorCheck(view, "instagram_refresh_sensor", 3, 180, timeout=10)
    deadline = time.monotonic() + timeout
    detail = ""
    try:
        while time.monotonic() < deadline:
            try:
                (beating, detail), (_, sensor_detail) = daemon(), sensor()
                detail = f"{detail} / {sensor_detail}"
            except Exception as exc:  # storage may still be initializing
                beating, detail = False, repr(exc)
            if beating and wanted in detail:
                return
            time.sleep(0.5)
    finally:
        view.close()
    log = log_path.read_text() if log_path.exists() else ""
    raise TimeoutError(f"sensor never showed {wanted!r}: {detail}\n{log[-3000:]}")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon_home(
    tmp_path_factory: pytest.TempPathFactory, kafka_broker: ServiceProcess
) -> Iterator[Path]:
    """A DAGSTER_HOME with a real daemon whose refresh sensor ticks (skips) on an empty topic."""
    home = empty_dagster_home(tmp_path_factory.mktemp("dagster_home"))
    log_path = home.parent / "daemon.log"
    topics = Topics(f"127.0.0.1:{kafka_broker.port}")
    topics.create(topics.refresh, 1)
    topics.create(topics.dlq, 1)
    daemon = start_daemon(
        home,
        {
            "KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap,
            "INSTAGRAM_REFRESH_TOPIC": topics.refresh,
            "INSTAGRAM_REFRESH_DLQ_TOPIC": topics.dlq,
            "KAFKA_FETCH_WAIT_MAX_MS": EMBEDDED_BROKER_FETCH_WAIT_MS,
        },
        log_path,
    )
    try:
        wait_for_sensor(home, log_path, "latest tick SKIPPED")
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
        "kafka": KafkaConnection(bootstrap_servers=topics.bootstrap),
        "refresh_topic": topics.refresh,
        "dlq_topic": topics.dlq,
        "mongodb_uri": mongo_uri,
        "redis_url": redis_url_for_test,
        "dagster_home": str(daemon_home),
    }


# --- /health and routing -----------------------------------------------------------------------


def test_health_is_the_old_consumers_body_and_touches_no_dependency(tmp_path: Path) -> None:
    unreachable = config(
        kafka=KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}"),
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


def test_unknown_path_is_404_json_listing_every_route() -> None:
    with HealthServer(config()) as server:
        status, headers, raw = request(server, "/metrics/extra")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw) == {
        "error": "not found",
        "routes": ["/health", "/ready", "/metrics", "/accounts/<handle-or-id>/history?days=N"],
    }


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
    kafka = body["checks"]["kafka"]["detail"]
    assert f"topic '{topics.refresh}' has 3 partition(s)" in kafka
    assert f"dead-letter topic '{topics.dlq}' has 1 partition(s)" in kafka
    assert "SENSOR" in body["checks"]["dagster_daemon"]["detail"]
    assert "QUEUED_RUN_COORDINATOR" in body["checks"]["dagster_daemon"]["detail"]
    # An idle tick long-polls for up to 10 s, so the latest tick is as often still STARTED.
    assert re.match(
        r"running; latest tick (SKIPPED|STARTED) ", body["checks"]["refresh_sensor"]["detail"]
    )
    assert body["checks"]["instagram_graph"]["detail"] == "not configured"


def test_ready_503_names_redis_and_hides_its_password(healthy: dict[str, Any]) -> None:
    healthy["redis_url"] = closed_port_url("redis", credentials="admin:hunter2@")
    status, body, raw = ready(config(**healthy))
    assert status == 503
    assert body["status"] == "not_ready"
    assert failing(body) == {"redis", "budget_redis"}  # the budgets live in REDIS_URL here
    assert "redis://***@127.0.0.1" in body["checks"]["redis"]["detail"]
    assert b"hunter2" not in raw


def test_ready_503_names_kafka_when_the_broker_port_is_closed(healthy: dict[str, Any]) -> None:
    healthy["kafka"] = KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}")
    status, body, _ = ready(config(**healthy))
    assert status == 503
    assert failing(body) == {"kafka"}
    assert "unreachable" in body["checks"]["kafka"]["detail"]


def test_missing_refresh_topic_is_reported_but_not_fatal(healthy: dict[str, Any]) -> None:
    """The sensor waits for the topic; nothing is lost meanwhile."""
    healthy["refresh_topic"] = "no-such-topic"
    status, body, _ = ready(config(**healthy))
    assert status == 200, body
    assert "topic 'no-such-topic' does not exist" in body["checks"]["kafka"]["detail"]


def test_missing_dead_letter_topic_makes_ready_503(healthy: dict[str, Any]) -> None:
    """The first rejected event would fail every tick: say so before it happens."""
    healthy["dlq_topic"] = "no-such-topic.dlq"
    status, body, _ = ready(config(**healthy))
    assert status == 503
    assert failing(body) == {"kafka"}
    detail = body["checks"]["kafka"]["detail"]
    assert "dead-letter topic 'no-such-topic.dlq' does not exist" in detail


def test_ready_503_names_dagster_daemon_without_heartbeats(
    healthy: dict[str, Any], tmp_path: Path
) -> None:
    healthy["dagster_home"] = str(empty_dagster_home(tmp_path / "dagster_home"))
    status, body, _ = ready(config(**healthy))
    assert status == 503
    assert failing(body) == {"dagster_daemon", "refresh_sensor"}
    detail = body["checks"]["dagster_daemon"]["detail"]
    assert "SENSOR (no heartbeat)" in detail
    assert "QUEUED_RUN_COORDINATOR (no heartbeat)" in detail
    assert body["checks"]["refresh_sensor"]["detail"].startswith("never ticked")


def test_unset_settings_fail_as_not_configured() -> None:
    status, body, _ = ready(config())
    assert status == 503
    checks = body["checks"]
    assert failing(body) == CRITICAL
    for name in ("kafka", "redis", "budget_redis", "mongodb"):
        assert checks[name]["detail"] == "not configured"
    assert "DAGSTER_HOME is not set" in checks["dagster_daemon"]["detail"]
    assert "DAGSTER_HOME is not set" in checks["refresh_sensor"]["detail"]
    assert (checks["instagram_graph"]["ok"], checks["instagram_graph"]["detail"]) == (
        True,
        "not configured",
    )


def test_graph_disabled_is_shown_by_fingerprint_and_the_token_never_is(
    healthy: dict[str, Any], redis_client: redis.Redis
) -> None:
    cfg = config(
        **healthy,
        instagram_access_token=TOKEN,
        instagram_business_account_id=BUSINESS_ID,
        cache_seconds=0,
    )
    fingerprint = token_fingerprint(TOKEN)
    with HealthServer(cfg) as server:
        _, _, before = request(server, "/ready")
        # A reason that (wrongly) embeds the token must still not leak it.
        reason = f"OAuthException 190: session for {TOKEN} has expired"
        FetchMemory(redis_client).disable_graph(fingerprint, reason)
        status, _, after = request(server, "/ready")
    enabled = json.loads(before)["checks"]["instagram_graph"]
    assert (enabled["ok"], enabled["detail"]) == (True, "1 of 1 credential(s) enabled")
    assert enabled["items"] == {fingerprint: "enabled; 0/200 calls this hour"}
    graph = json.loads(after)["checks"]["instagram_graph"]
    assert graph["ok"] is False
    assert graph["detail"] == f"0 of 1 credential(s) enabled; disabled: {fingerprint}"
    item = graph["items"][fingerprint]
    assert item.startswith("disabled until ")
    assert item.endswith(
        ", or until the token changes: OAuthException 190: session for *** has expired; "
        "0/200 calls this hour"
    )
    assert status == 200  # informational: scraping still works
    assert TOKEN.encode() not in before + after


def test_a_hung_dependency_cannot_hang_ready(healthy: dict[str, Any]) -> None:
    """Redis that accepts connections and never answers (nobody calls accept())."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        healthy["redis_url"] = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        status, body, _ = ready(config(**healthy, check_timeout_seconds=1.0))
    assert status == 503
    assert failing(body) == {"redis", "budget_redis"}  # the budgets live in REDIS_URL here
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
        # Credentials in query strings, hidden like user:password.
        (
            "mongodb://db/x?authSource=admin&password=s3cr3t",
            "mongodb://db/x?authSource=admin&password=***",
        ),
        (
            "mongodb+srv://c.example/x?authMechanism=MONGODB-AWS"
            "&authMechanismProperties=AWS_SESSION_TOKEN:FQoGZXIvYXdz,SERVICE_NAME:x&w=majority",
            "mongodb+srv://c.example/x?authMechanism=MONGODB-AWS"
            "&authMechanismProperties=***&w=majority",
        ),
        (
            "mongodb://***@db/?tlsCertificateKeyFilePassword=kp1",
            "mongodb://***@db/?tlsCertificateKeyFilePassword=***",
        ),
        (
            "kafka://b:9093?sasl.password=pw1&sasl_username=u",
            "kafka://b:9093?sasl.password=***&sasl_username=***",
        ),
        ("rediss://cache:6380/0?token=t0k;ssl=true", "rediss://cache:6380/0?token=***;ssl=true"),
        (
            "https://graph.example/v25.0/me?access_token=EAAG1&fields=id",
            "https://graph.example/v25.0/me?access_token=***&fields=id",
        ),
        ("error: sasl.password=pw1 rejected", "error: sasl.password=*** rejected"),
    ],
)
def test_redact_uri_hides_credentials(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_ready_and_the_log_hide_query_string_credentials(
    healthy: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    healthy["redis_url"] = closed_port_url("redis") + "?password=qs-s3cret&health_check_interval=1"
    healthy["mongodb_uri"] = (
        "mongodb://127.0.0.1:1/x?authMechanismProperties=AWS_SESSION_TOKEN:tok9"
    )
    with caplog.at_level(logging.INFO):
        status, body, raw = ready(config(**healthy, check_timeout_seconds=1.0))
    assert status == 503
    assert {"redis", "mongodb"} <= failing(body)
    assert b"qs-s3cret" not in raw and b"tok9" not in raw
    assert "qs-s3cret" not in caplog.text and "tok9" not in caplog.text
    assert "password=***" in body["checks"]["redis"]["detail"]


def test_every_sidecar_log_line_is_redacted_whoever_logs_it() -> None:
    """The formatter ``ig-refresh health`` installs: arguments and tracebacks included."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, secrets=[TOKEN]))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("cannot reach %s", "mongodb://app:pw1@db/x?authMechanismProperties=AWS:k2")
        try:
            raise ConnectionError(f"redis://cache:6379/0?password=pw3 refused token {TOKEN}")
        except ConnectionError:
            logger.exception("probe failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "mongodb://***@db/x?authMechanismProperties=***" in text
    assert "ConnectionError: redis://cache:6379/0?password=*** refused token ***" in text
    for secret in ("pw1", "k2", "pw3", TOKEN):
        assert secret not in text


# --- single flight, cache, kept clients ---------------------------------------------------------


def flood(server: HealthServer, probes: int) -> list[tuple[int, dict[str, Any]]]:
    """``probes`` GET /ready at once, each on its own connection."""
    start = threading.Barrier(probes)
    answers: list[tuple[int, dict[str, Any]]] = []

    def probe() -> None:
        start.wait(60)
        status, _, raw = request(server, "/ready")
        answers.append((status, json.loads(raw)))

    threads = [threading.Thread(target=probe) for _ in range(probes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def health_clients(client: redis.Redis) -> list[int]:
    return [int(c["id"]) for c in client.client_list() if c["name"] == "ig-refresh-health"]


def test_a_flood_of_probes_runs_each_check_once_per_cache_period_on_kept_connections(
    healthy: dict[str, Any], redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Counted at the servers: Redis commands and connections from valkey itself, Kafka
    connections at a pass-through front door (``kafka_front_door.py``) before the broker."""
    with KafkaFrontDoor(users=None).start(tmp_path / "broker.log") as door:
        topics = Topics(door.bootstrap)
        topics.create("refresh", 3)
        topics.create("refresh.dlq", 1)
        door.connections.clear()
        healthy.update(
            kafka=KafkaConnection(bootstrap_servers=door.bootstrap),
            refresh_topic="refresh",
            dlq_topic="refresh.dlq",
        )
        cfg = config(
            **healthy, instagram_access_token=TOKEN, instagram_business_account_id=BUSINESS_ID
        )
        assert cfg.cache_seconds == 2.0
        with HealthServer(cfg) as server:
            # Two evaluations open the kept clients: librdkafka moves from its bootstrap
            # connection to one for the broker the metadata names, once.
            request(server, "/ready")
            time.sleep(cfg.cache_seconds)
            warm_status, _, warm_raw = request(server, "/ready")
            assert warm_status == 200, warm_raw
            kafka_connections = len(door.connections)
            redis_ids = health_clients(redis_client)
            before = redis_client.info("commandstats")
            connections_before = redis_client.info("stats")["total_connections_received"]
            started = time.monotonic()
            answers = flood(server, 200)
            elapsed = time.monotonic() - started
            after = redis_client.info("commandstats")
            time.sleep(cfg.cache_seconds)  # one more evaluation, surely outside the cache
            assert json.loads(request(server, "/ready")[2])["checked_at"] not in (
                {json.loads(warm_raw)["checked_at"]} | {body["checked_at"] for _, body in answers}
            )
            connections_after = redis_client.info("stats")["total_connections_received"]
            redis_ids_after = health_clients(redis_client)
    assert len(answers) == 200
    assert {status for status, _ in answers} == {200}
    warm = json.loads(warm_raw)["checked_at"]
    evaluations = {body["checked_at"] for _, body in answers} - {warm}
    # At most one evaluation per cache period, and each evaluation checks each dependency once.
    assert len(evaluations) <= 1 + int(elapsed / cfg.cache_seconds)
    pings = after["cmdstat_ping"]["calls"] - before["cmdstat_ping"]["calls"]
    graph_reads = after["cmdstat_pttl"]["calls"] - before["cmdstat_pttl"]["calls"]
    assert pings == graph_reads == len(evaluations)
    # No new connection anywhere: the clients opened by the first probe served them all.
    assert connections_after == connections_before
    assert redis_ids_after == redis_ids and len(redis_ids) == 1
    assert kafka_connections >= 1
    assert len(door.connections) == kafka_connections


def test_the_cached_answer_expires_after_the_cache_period(
    healthy: dict[str, Any], redis_client: redis.Redis
) -> None:
    cfg = config(**healthy, cache_seconds=0.5)
    with HealthServer(cfg) as server:
        first = json.loads(request(server, "/ready")[2])
        second = json.loads(request(server, "/ready")[2])
        time.sleep(0.6)
        third = json.loads(request(server, "/ready")[2])
    assert first["checked_at"] == second["checked_at"]
    assert second["age_seconds"] >= first["age_seconds"]
    assert third["checked_at"] != first["checked_at"]


def test_a_dependency_that_comes_back_is_ok_again_without_a_restart(
    healthy: dict[str, Any], tmp_path: Path
) -> None:
    """The kept Redis client fails while the server is down and is rebuilt once it is back."""
    port = free_port()
    healthy["redis_url"] = f"redis://127.0.0.1:{port}/0"
    valkey = start_valkey(port=port, log_path=tmp_path / "valkey-1.log")
    cfg = config(**healthy, cache_seconds=0, check_timeout_seconds=2.0)
    with HealthServer(cfg) as server:
        try:
            up = json.loads(request(server, "/ready")[2])["checks"]["redis"]
            valkey.stop()
            down = json.loads(request(server, "/ready")[2])["checks"]["redis"]
            valkey = start_valkey(port=port, log_path=tmp_path / "valkey-2.log")
            back = json.loads(request(server, "/ready")[2])["checks"]["redis"]
            client = redis.Redis(port=port)
            names = [c["name"] for c in client.client_list()]
            client.close()
        finally:
            valkey.stop()
    assert (up["ok"], down["ok"], back["ok"]) == (True, False, True), (up, down, back)
    assert "unreachable" in down["detail"]
    assert names.count("ig-refresh-health") == 1


# --- the refresh sensor's own tick history ------------------------------------------------------


@pytest.mark.slow
def test_ready_503_while_the_refresh_sensor_keeps_failing_with_its_error(
    healthy: dict[str, Any], tmp_path: Path, kafka_broker: ServiceProcess
) -> None:
    """A real daemon runs the real sensor with Kafka credentials but no SASL protocol: every
    tick fails, the daemon keeps beating, and only the tick history tells."""
    home = empty_dagster_home(tmp_path / "failing_home")
    log_path = tmp_path / "failing-daemon.log"
    secret = "pw-b71e-must-not-show"
    daemon = start_daemon(
        home,
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_broker.port}",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": secret,
        },
        log_path,
    )
    try:
        wait_for_sensor(home, log_path, "last 3 ticks failed")
        healthy["dagster_home"] = str(home)
        status, body, raw = ready(config(**healthy))
        # The other rule on the same real history: no good tick at all, for longer than allowed.
        stale_status, stale_body, _ = ready(
            config(**healthy, sensor_failed_ticks=100, sensor_stale_seconds=1)
        )
    finally:
        daemon.stop()
    assert status == 503
    assert failing(body) == {"refresh_sensor"}, body
    detail = body["checks"]["refresh_sensor"]["detail"]
    assert detail.startswith("last 3 ticks failed, latest ")
    assert "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set but KAFKA_SECURITY_PROTOCOL" in detail
    assert secret.encode() not in raw
    assert stale_status == 503
    assert stale_body["checks"]["refresh_sensor"]["detail"].startswith(
        "no good tick yet (limit 1s while running); latest FAILURE"
    )


def history(*ticks: tuple[str, float], status: str = "DECLARED_IN_CODE") -> SensorHistory:
    recent = [
        SensorTick(status=s, timestamp=t, error="boom" if s == "FAILURE" else None)
        for s, t in ticks
    ]
    good = next((t for t in recent if t.status in ("SUCCESS", "SKIPPED")), None)
    return SensorHistory(status=status, started_at=0.0, recent=recent, last_good=good)


@pytest.mark.parametrize(
    ("ticks", "status", "ok", "detail"),
    [
        (
            [("FAILURE", 995), ("FAILURE", 990), ("FAILURE", 985)],
            "RUNNING",
            False,
            "last 3 ticks failed, latest 5s ago: boom",
        ),
        (
            [("FAILURE", 995), ("FAILURE", 990), ("SUCCESS", 985)],
            "RUNNING",
            True,
            "running; latest tick FAILURE 5s ago; 2 failed in a row: boom",
        ),
        ([("SKIPPED", 998)], "DECLARED_IN_CODE", True, "running; latest tick SKIPPED 2s ago"),
        (
            [("STARTED", 998), ("FAILURE", 990), ("FAILURE", 985), ("FAILURE", 980)],
            "RUNNING",
            False,
            "last 3 ticks failed, latest 10s ago: boom",
        ),
        (
            [("STARTED", 990), ("SUCCESS", 700)],
            "RUNNING",
            True,
            "running; latest tick STARTED 10s ago",
        ),
        (
            [("SKIPPED", 700)],
            "RUNNING",
            False,
            "last good tick 300s ago (limit 180s while running); latest SKIPPED 300s ago",
        ),
        ([("FAILURE", 700)], "STOPPED", True, "stopped (in the UI): no ticks expected"),
    ],
)
def test_sensor_judgement(ticks, status: str, ok: bool, detail: str) -> None:
    assert judge_sensor(history(*ticks, status=status), 3, 180, now=1000.0) == (ok, detail)


# --- configuration and the process -------------------------------------------------------------


def test_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("MONGODB_URI", "mongodb://db:27017")
    monkeypatch.setenv("INSTAGRAM_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("PORT", "4000")
    monkeypatch.delenv("INSTAGRAM_REFRESH_TOPIC", raising=False)
    monkeypatch.delenv("INSTAGRAM_REFRESH_DLQ_TOPIC", raising=False)
    monkeypatch.delenv("MONGODB_DATABASE", raising=False)
    cfg = HealthConfig.from_env(host="127.0.0.1")
    assert cfg.kafka == KafkaConnection(bootstrap_servers="kafka-1:9092")
    assert cfg.redis_url == "redis://cache:6379/0"
    assert (cfg.mongodb_uri, cfg.mongodb_database) == ("mongodb://db:27017", "ratecreator")
    assert (cfg.refresh_topic, cfg.dlq_topic) == (
        "data-refresh-instagram",
        "data-refresh-instagram.dlq",
    )
    assert (cfg.port, cfg.host, cfg.dagster_home) == (4000, "127.0.0.1", str(tmp_path))
    assert TOKEN not in repr(cfg)
    monkeypatch.delenv("PORT")
    assert HealthConfig.from_env().port == 3053


def test_the_sidecar_watches_the_sensor_the_code_location_defines() -> None:
    """``health`` cannot import ``refresh`` (sibling layers), so the name is checked here."""
    assert HealthConfig().sensor_name == instagram_refresh_sensor.name


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


def test_it_binds_loopback_only_unless_host_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """127.0.0.2 is another loopback address: a server bound to all interfaces answers there."""
    monkeypatch.delenv("HOST", raising=False)
    with HealthServer(HealthConfig.from_env(port=0)) as server:
        assert reachable("127.0.0.1", server.port)
        assert not reachable("127.0.0.2", server.port)
    monkeypatch.setenv("HOST", "127.0.0.2")
    with HealthServer(HealthConfig.from_env(port=0)) as server:
        assert reachable("127.0.0.2", server.port)
        assert not reachable("127.0.0.1", server.port)


def health_command() -> list[str]:
    script = VENV_BIN / "ig-refresh"
    if (
        Path(__file__).parents[2] / "ig_refresh_dagster" / "cli" / "__init__.py"
    ).exists() and script.exists():
        return [str(script), "health"]
    code = "import sys; from ig_refresh_dagster.health.server import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def start_sidecar(
    tmp_path: Path, port: int, *flags: str, env: dict[str, str] | None = None
) -> ServiceProcess:
    """``ig-refresh health`` on ``port``, its output in ``tmp_path/health.log``; ``env`` is
    added to this environment without ``HOST`` and ``DAGSTER_HOME``."""
    base = {k: v for k, v in os.environ.items() if k not in ("HOST", "DAGSTER_HOME")}
    return ServiceProcess(
        "health",
        [*health_command(), "--port", str(port), *flags],
        port,
        tmp_path / "health.log",
        env=base | {"IG_REFRESH_DATA_DIR": str(tmp_path / "data")} | (env or {}),
        start_timeout=60,
    )


def test_cli_serves_on_loopback_by_default_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "health.log"
    sidecar = start_sidecar(tmp_path, port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())["status"]) == (200, "healthy")
        conn.close()
        assert not reachable("127.0.0.2", port)
    finally:
        exit_code = sidecar.stop(timeout=30)  # SIGTERM; SIGKILL (exit -9) only after 30 s
    assert exit_code == 0, log_path.read_text()
    log = log_path.read_text()
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "health sidecar stopped (SIGTERM)" in log
