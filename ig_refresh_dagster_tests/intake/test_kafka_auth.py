"""Managed Kafka: the TLS and SASL settings reach every Kafka client, and the password never shows.

The cluster is the embedded Tansu broker behind ``KafkaFrontDoor`` (``kafka_front_door.py``): a
loopback TLS + SASL/PLAIN listener, like a managed cluster's, that refuses every request before
a login and records what each connection presented. A client that did not receive the settings
cannot get past it, so a tick that reads, describes and dead-letters proves all three clients
logged in.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from dagster import EnvVar, SensorResult, build_sensor_context, instance_for_test
from dagster_graphql.test.utils import (
    define_out_of_process_context,
    execute_dagster_graphql,
    infer_resource_selector,
)
from pydantic import ValidationError

from ig_refresh_dagster.definitions import build_resources
from ig_refresh_dagster.devstack.services import ServiceProcess, free_port
from ig_refresh_dagster.devstack.stack import EMBEDDED_BROKER_FETCH_WAIT_MS, PROJECT_ROOT
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.server import HealthServer
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.topic_reader import PollLimits, TopicCursor, TopicReader
from ig_refresh_dagster.refresh.launch.intake_sensor import instagram_refresh_sensor
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.mongo import litemongo_uri
from ig_refresh_dagster_tests.support.kafka_front_door import Certificates, KafkaFrontDoor
from ig_refresh_dagster_tests.support.kafka_helpers import refresh_event

USER = "ig-refresh-app"
PASSWORD = "pw-7f3a91-never-shown"
WRONG = "pw-wrong-0c55e2-never-shown"
ACCOUNT = "65a1b2c3d4e5f60718293a4b"
TOPIC, DLQ = "refresh", "refresh.dlq"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def front_door(certs: Certificates, tmp_path: Path) -> Iterator[KafkaFrontDoor]:
    door = KafkaFrontDoor({USER: PASSWORD}, certs).start(tmp_path / "broker.log")
    try:
        yield door
    finally:
        door.stop()


@pytest.fixture
def managed_kafka(
    monkeypatch: pytest.MonkeyPatch, front_door: KafkaFrontDoor, certs: Certificates
) -> KafkaFrontDoor:
    """The environment a managed cluster needs, both topics, one valid and one bad event."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": front_door.bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": USER,
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CA_LOCATION": str(certs.ca_path),
        "INSTAGRAM_REFRESH_TOPIC": TOPIC,
        "INSTAGRAM_REFRESH_DLQ_TOPIC": DLQ,
        "KAFKA_FETCH_WAIT_MAX_MS": EMBEDDED_BROKER_FETCH_WAIT_MS,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    connection = KafkaConnection.from_settings()
    assert connection is not None
    admin = AdminClient(connection.client_config())
    for future in admin.create_topics([NewTopic(TOPIC, 2, 1), NewTopic(DLQ, 1, 1)]).values():
        future.result(10)
    producer = Producer(connection.client_config())
    producer.produce(TOPIC, value=refresh_event(ACCOUNT), partition=0)
    producer.produce(TOPIC, value=b"{broken", partition=1)
    assert producer.flush(10) == 0
    front_door.connections.clear()
    return front_door


def ready_body(config: HealthConfig) -> tuple[int, bytes]:
    with HealthServer(config) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", "/ready")
        response = conn.getresponse()
        return response.status, response.read()


def evaluate_sensor() -> SensorResult:
    """One tick of the real sensor with the resources the code location builds from the
    environment. The context is entered and left: left open, it would keep a disposed instance
    as Dagster's current definitions-state storage, and a later test resolving ``defs`` fails."""
    with (
        instance_for_test() as instance,
        build_sensor_context(
            instance_ref=instance.get_ref(),
            resources={
                "kafka": build_resources()["kafka"],
                # Handles are looked up in an empty store of the instance's own.
                "mongo": MongoResource(uri=litemongo_uri(Path(instance.root_directory) / "mongo")),
            },
        ) as context,
    ):
        result = instagram_refresh_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def test_sensor_consumer_admin_client_and_dead_letter_producer_all_log_in(
    managed_kafka: KafkaFrontDoor,
) -> None:
    result = evaluate_sensor()
    # The admin client described the topic, the consumer read both events, the producer
    # dead-lettered the bad one: each step needs its own client past the login.
    assert [r.partition_key for r in result.run_requests] == [ACCOUNT]
    connection = KafkaConnection.from_settings()
    assert connection is not None
    with TopicReader(connection, DLQ, "test-reader") as reader:
        dead = reader.poll(TopicCursor(topic=DLQ), PollLimits(idle_seconds=1.5)).messages
    assert [m.value for m in dead] == [b"{broken"]
    seen = managed_kafka.connections
    assert seen, "no client reached the front door"
    assert all(c.tls and c.mechanism == "PLAIN" for c in seen), seen
    assert all(c.authenticated and c.username == USER for c in seen), seen
    assert not [c.refused for c in seen if c.refused]


def test_ready_and_the_health_cli_log_in_with_the_settings(
    managed_kafka: KafkaFrontDoor, tmp_path: Path
) -> None:
    status, raw = ready_body(HealthConfig.from_env(host="127.0.0.1", port=0))
    kafka = json.loads(raw)["checks"]["kafka"]
    assert kafka["ok"] is True, kafka
    assert f"{managed_kafka.bootstrap} (SASL_SSL/PLAIN)" in kafka["detail"]
    assert status == 503  # MongoDB, Redis and the daemon are not configured here

    port = free_port()
    cli = ServiceProcess(
        "health",
        [str(Path(sys.executable).parent / "ig-refresh"), "health", "--port", str(port)],
        port,
        tmp_path / "health.log",
        env={**os.environ},
        start_timeout=60,
    )
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/ready")
        cli_kafka = json.loads(conn.getresponse().read())["checks"]["kafka"]
        conn.close()
    finally:
        cli.stop()
    assert cli_kafka["ok"] is True, cli_kafka
    assert all(c.authenticated and c.tls for c in managed_kafka.connections)
    assert PASSWORD.encode() not in raw
    assert PASSWORD not in (tmp_path / "health.log").read_text()


def test_a_wrong_password_fails_loudly_and_is_never_shown(
    managed_kafka: KafkaFrontDoor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", WRONG)
    with pytest.raises(Exception) as failure:
        evaluate_sensor()
    status, raw = ready_body(
        HealthConfig.from_env(host="127.0.0.1", port=0, check_timeout_seconds=2)
    )
    kafka = json.loads(raw)["checks"]["kafka"]
    assert (status, kafka["ok"]) == (503, False)
    assert "SASL authentication error: Authentication failed: bad credentials" in kafka["detail"]
    # The wrong password did reach the listener (so the setting was passed), and was refused.
    presented = [c for c in managed_kafka.connections if c.password is not None]
    assert presented and {c.password for c in presented} == {WRONG}
    assert not any(c.authenticated for c in managed_kafka.connections)
    shown = "\n".join(
        [
            str(failure.value),
            str(failure.getrepr(style="long")),
            caplog.text,
            raw.decode(),
            *capfd.readouterr(),
        ]
    )
    assert WRONG not in shown
    assert PASSWORD not in shown


RESOURCE_QUERY = """
query ($selector: ResourceSelector!) {
  topLevelResourceDetailsOrError(resourceSelector: $selector) {
    ... on ResourceDetails { configuredValues { key value type } }
    ... on PythonError { message }
  }
}"""


def ui_resource_config(code_location: str, attribute: str | None) -> tuple[dict, str]:
    """The ``kafka`` resource's configuration as the UI's resource page shows it: asked through
    the webserver's own GraphQL schema, with the code location in its own process."""
    with (
        instance_for_test() as instance,
        define_out_of_process_context(code_location, attribute, instance) as context,
    ):
        result = execute_dagster_graphql(
            context, RESOURCE_QUERY, {"selector": infer_resource_selector(context, "kafka")}
        )
    details = result.data["topLevelResourceDetailsOrError"]
    return {v["key"]: v for v in details["configuredValues"]}, json.dumps(result.data)


def test_the_ui_shows_the_password_variable_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1.example:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", USER)
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    assert build_resources()["kafka"].sasl_password == EnvVar("KAFKA_SASL_PASSWORD")
    values, shown = ui_resource_config(str(PROJECT_ROOT / "workspace.yaml"), None)
    assert values["sasl_password"] == {
        "key": "sasl_password",
        "value": "KAFKA_SASL_PASSWORD",
        "type": "ENV_VAR",
    }
    assert values["sasl_username"]["value"] == "KAFKA_SASL_USERNAME"
    assert PASSWORD not in shown


# --- the connection model ----------------------------------------------------------------------


def test_client_config_maps_every_setting_to_librdkafka() -> None:
    connection = KafkaConnection(
        bootstrap_servers="b-1.example:9096",
        security_protocol="sasl_ssl",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=USER,
        sasl_password=PASSWORD,
        ssl_ca_location="/etc/ssl/certs/ca.pem",
    )
    assert connection.client_config(**{"group.id": "g"}) == {
        "bootstrap.servers": "b-1.example:9096",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": USER,
        "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/ssl/certs/ca.pem",
        "group.id": "g",
    }
    assert PASSWORD not in repr(connection) + str(connection) + connection.describe()
    assert KafkaConnection(bootstrap_servers="k:9092").client_config() == {
        "bootstrap.servers": "k:9092"
    }


def test_sasl_settings_without_a_sasl_protocol_are_refused_without_echoing_them() -> None:
    """librdkafka would silently ignore them and connect in plaintext."""
    with pytest.raises(ValidationError) as refused:
        KafkaConnection(bootstrap_servers="k:9092", sasl_username=USER, sasl_password=PASSWORD)
    assert "set it to SASL_SSL" in str(refused.value)
    assert PASSWORD not in str(refused.value) and USER not in str(refused.value)
    with pytest.raises(ValidationError, match="must be one of"):
        KafkaConnection(bootstrap_servers="k:9092", security_protocol="TLS")


def test_from_settings_is_none_without_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    assert KafkaConnection.from_settings() is None
