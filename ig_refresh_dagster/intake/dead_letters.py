"""Publishes rejected events to the dead-letter topic, untouched, with headers saying why.

A publish that fails raises, so the sensor tick fails and its cursor does not move past the
message: a rejected event is re-read and re-published (at least once), never lost.
"""

from __future__ import annotations

from confluent_kafka import KafkaException, Producer

from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.events import Rejection
from ig_refresh_dagster.intake.messages import ConsumedMessage


def dlq_headers(message: ConsumedMessage, rejection: Rejection) -> list[tuple[str, bytes]]:
    added = [
        ("dlq-reason", rejection.reason.value.encode()),
        ("dlq-detail", rejection.detail.encode()),
        ("dlq-source-topic", message.topic.encode()),
        ("dlq-source-partition", str(message.partition).encode()),
        ("dlq-source-offset", str(message.offset).encode()),
    ]
    return [*((k, v) for k, v in message.headers if v is not None), *added]


class DeadLetterPublisher:
    def __init__(self, connection: KafkaConnection, topic: str) -> None:
        self.topic = topic
        self._producer = Producer(
            connection.client_config(
                **{"enable.idempotence": False, "acks": "all", "message.timeout.ms": 15000}
            )
        )

    def publish(self, rejected: list[tuple[ConsumedMessage, Rejection]]) -> None:
        failures: list[str] = []

        def on_delivery(err, _msg) -> None:
            if err is not None:
                failures.append(err.str())

        for message, rejection in rejected:
            self._producer.produce(
                self.topic,
                key=message.key,
                value=message.value,
                headers=dlq_headers(message, rejection),
                on_delivery=on_delivery,
            )
        remaining = self._producer.flush(20)
        if remaining or failures:
            raise KafkaException(
                f"dead-letter publish to {self.topic} failed for "
                f"{remaining + len(failures)} of {len(rejected)} messages: {failures[:3]}"
            )
