"""Small helpers shared by the Kafka-facing tests."""

from __future__ import annotations

import json

from confluent_kafka import Consumer, TopicPartition

from ig_refresh_dagster.devstack.stack import EMBEDDED_BROKER_FETCH_WAIT_MS
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.topic_reader import PollLimits, TopicCursor, TopicReader


def refresh_event(account_id: str, **overrides: object) -> bytes:
    body = {"accountId": account_id, "platform": "INSTAGRAM", "scheduledAt": "2026-11-28T10:00:00Z"}
    body.update(overrides)
    return json.dumps(body).encode()


def account_ids(n: int, start: int = 0) -> list[str]:
    return [f"{i:024x}" for i in range(start + 1, start + n + 1)]


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
