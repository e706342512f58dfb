"""Small helpers shared by the Kafka-facing tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Producer, TopicPartition
from dagster import DagsterInstance, SensorResult, build_sensor_context

from ig_refresh_dagster.devstack.stack import EMBEDDED_BROKER_FETCH_WAIT_MS
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.topic_reader import PollLimits, TopicCursor, TopicReader
from ig_refresh_dagster.refresh.launch.intake_sensor import instagram_refresh_sensor
from ig_refresh_dagster.refresh.run.resources import KafkaResource, MongoResource
from ig_refresh_dagster.stores.mongo import litemongo_uri

if TYPE_CHECKING:
    from ig_refresh_dagster_tests.conftest import Topics


def refresh_event(account_id: str, **overrides: object) -> bytes:
    body = {"accountId": account_id, "platform": "INSTAGRAM", "scheduledAt": "2026-11-28T10:00:00Z"}
    body.update(overrides)
    return json.dumps(body).encode()


def account_ids(n: int, start: int = 0) -> list[str]:
    return [f"{i:024x}" for i in range(start + 1, start + n + 1)]


BIG = 1_200_000  # over librdkafka's 1,000,000-byte producer limit; the embedded broker takes it


def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    """Records (``produce()`` keyword arguments) of any size the broker takes, each its own
    batch, so the embedded broker's high watermark (which trails to the start of the last
    batch) is exact."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4 * BIG})
    for record in records:
        producer.produce(topic, **record)
        assert producer.flush(10) == 0


def read_topic(bootstrap: str, topic: str) -> list[ConsumedMessage]:
    """Everything on ``topic``, read through the production reader from the beginning."""
    with TopicReader(
        KafkaConnection(bootstrap_servers=bootstrap),
        topic,
        "test-reader",
        fetch_wait_max_ms=int(EMBEDDED_BROKER_FETCH_WAIT_MS),
    ) as reader:
        return reader.poll(TopicCursor(topic=topic), PollLimits(idle_seconds=1.5)).messages


def committed_offsets(bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        consumer.close()


def kafka_resource(topics: Topics, **overrides: object) -> KafkaResource:
    config = {
        "bootstrap_servers": topics.bootstrap,
        "topic": topics.refresh,
        "dlq_topic": topics.dlq,
        "idle_poll_seconds": 0.5,
        # Tests tick empty topics often: a short long poll keeps them quick.
        "wait_for_events_seconds": 2.0,
        "fetch_wait_max_ms": int(EMBEDDED_BROKER_FETCH_WAIT_MS),
    }
    config.update(overrides)
    return KafkaResource(**config)


def tick(
    instance: DagsterInstance,
    resource: KafkaResource,
    cursor: str | None,
    mongo_uri: str | None = None,
) -> SensorResult:
    """One evaluation, then what the daemon does with it: add the requested partitions.
    Without a ``mongo_uri``, Mongo is an empty store in the instance's temporary folder."""
    mongo = MongoResource(uri=mongo_uri or litemongo_uri(Path(instance.root_directory) / "mongo"))
    with build_sensor_context(
        instance_ref=instance.get_ref(),
        cursor=cursor,
        resources={"kafka": resource, "mongo": mongo},
    ) as context:
        result = instagram_refresh_sensor(context)
    assert isinstance(result, SensorResult)
    for request in result.dynamic_partitions_requests or []:
        assert len(set(request.partition_keys)) == len(request.partition_keys)
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    return result
