"""Reads the refresh topic from offsets the sensor keeps in its cursor.

``assign()`` rather than a consumer-group subscription: the sensor, not the group coordinator,
owns the position, so a tick that raises re-reads exactly the same offsets, and no rebalance
wait (half the session timeout on the embedded broker) slows a tick. The group is still told
the offsets of the last *durable* cursor, so operators see lag in their usual tools.
"""

from __future__ import annotations

import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel, ValidationError

from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.messages import ConsumedMessage


class TopicCursor(BaseModel):
    """Next offset to read per partition; small enough to live in a Dagster sensor cursor."""

    topic: str
    offsets: dict[int, int] = {}
    # Kafka's id of the topic the offsets belong to. A new id means the topic was recreated
    # (or a memory-only broker restarted): the old offsets mean nothing there, and reusing
    # ``topic:partition:offset`` run keys would make Dagster skip the new events forever, so
    # each new incarnation bumps ``generation``, which becomes part of later run keys.
    topic_id: str | None = None
    generation: int = 0

    @classmethod
    def parse(cls, raw: str | None, topic: str) -> tuple[TopicCursor, str | None]:
        """The cursor, and a note when the stored one was unusable or for another topic."""
        if not raw:
            return cls(topic=topic), None
        try:
            cursor = cls.model_validate_json(raw)
        except ValidationError:
            return cls(topic=topic), f"cursor {raw[:100]!r} is unreadable; starting from earliest"
        if cursor.topic != topic:
            return cls(topic=topic), f"cursor was for topic {cursor.topic!r}; starting afresh"
        return cursor, None

    def to_json(self) -> str:
        return self.model_copy(
            update={"offsets": dict(sorted(self.offsets.items()))}
        ).model_dump_json()


class PollLimits(BaseModel):
    max_messages: int = 500
    max_seconds: float = 10.0
    # Quiet time that ends a tick once messages flowed; before the first one the consumer may
    # still be connecting, so an empty topic is declared only after ``first_message_seconds``.
    idle_seconds: float = 0.5
    first_message_seconds: float = 2.0


class PollResult(BaseModel):
    messages: list[ConsumedMessage]
    cursor: TopicCursor
    notes: list[str]


class TopicReader:
    def __init__(
        self,
        connection: KafkaConnection,
        topic: str,
        group_id: str,
        fetch_wait_max_ms: int | None = None,
    ) -> None:
        self.topic = topic
        self._admin = AdminClient(connection.client_config())
        self._consumer = Consumer(
            connection.client_config(
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    # An out-of-range cursor (the broker lost its log) is reported, not reset.
                    "auto.offset.reset": "error",
                    "socket.timeout.ms": 10000,
                    # Embedded-broker tuning (KAFKA_FETCH_WAIT_MAX_MS, set by the dev stack).
                    **({"fetch.wait.max.ms": fetch_wait_max_ms} if fetch_wait_max_ms else {}),
                }
            )
        )

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self, timeout: float = 5.0) -> tuple[str | None, list[int]]:
        """The topic's id and partitions; (None, []) when it does not exist (yet)."""
        future = self._admin.describe_topics(TopicCollection([self.topic]))[self.topic]
        try:
            description = future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None, []
            raise
        return str(description.topic_id), sorted(p.id for p in description.partitions)

    def commit(self, durable: TopicCursor) -> None:
        """Tell the consumer group how far the durable cursor got (lag visibility only)."""
        if durable.offsets:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in durable.offsets.items()],
                asynchronous=False,
            )

    def poll(self, cursor: TopicCursor, limits: PollLimits) -> PollResult:
        notes: list[str] = []
        topic_id, partitions = self.describe()
        if not partitions:
            return PollResult(messages=[], cursor=cursor, notes=[f"topic {self.topic} not found"])
        if cursor.topic_id not in (None, topic_id):
            notes.append(
                f"topic {self.topic} was recreated (id {cursor.topic_id} -> {topic_id}); "
                "re-reading every partition from the earliest offset"
            )
            cursor = TopicCursor(topic=self.topic, generation=cursor.generation + 1)
        offsets = dict(cursor.offsets)
        # The consumer's own metadata request before assign(): without it the embedded broker
        # answered the first fetch ~0.5 s late (measured in benchmarks/run.py).
        self._consumer.list_topics(self.topic, timeout=5)
        for p in sorted(set(offsets) - set(partitions)):
            notes.append(f"partition {p} is gone from {self.topic}; keeping its offset")
        new = [p for p in partitions if p not in offsets]
        if new and cursor.offsets:
            notes.append(f"new partitions {new}: reading them from the earliest offset")
        self._consumer.assign(
            [TopicPartition(self.topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in partitions]
        )
        messages: list[ConsumedMessage] = []
        started = last_message = time.monotonic()
        while len(messages) < limits.max_messages:
            now = time.monotonic()
            quiet = limits.idle_seconds if messages else limits.first_message_seconds
            if now - started >= limits.max_seconds or now - last_message >= quiet:
                break
            batch = self._consumer.consume(
                num_messages=limits.max_messages - len(messages),
                timeout=min(limits.idle_seconds, limits.max_seconds - (now - started)),
            )
            for msg in batch:
                if msg.error() is not None:
                    self._handle_error(msg, offsets, notes)
                    continue
                last_message = time.monotonic()
                offsets[msg.partition()] = msg.offset() + 1
                messages.append(
                    ConsumedMessage(
                        topic=msg.topic(),
                        partition=msg.partition(),
                        offset=msg.offset(),
                        key=msg.key(),
                        value=msg.value(),
                        headers=list(msg.headers() or []),
                        generation=cursor.generation,
                    )
                )
        self._consumer.unassign()
        next_cursor = cursor.model_copy(update={"offsets": offsets, "topic_id": topic_id})
        return PollResult(messages=messages, cursor=next_cursor, notes=notes)

    def _handle_error(self, msg, offsets: dict[int, int], notes: list[str]) -> None:
        err: KafkaError = msg.error()
        partition = msg.partition()
        if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE) and (
            partition is not None and partition >= 0
        ):
            # Offsets went backwards (e.g. a memory-only broker restarted): say so and re-read
            # the partition from its start rather than stalling on an offset that will never come.
            notes.append(
                f"partition {partition}: offset {offsets.get(partition)} is out of range "
                "(broker log reset?); re-reading from the earliest offset"
            )
            offsets.pop(partition, None)
            self._consumer.seek(TopicPartition(self.topic, partition, OFFSET_BEGINNING))
            return
        if err.fatal() or not err.retriable():
            raise KafkaException(err)
        notes.append(f"transient Kafka error: {err.str()}")
