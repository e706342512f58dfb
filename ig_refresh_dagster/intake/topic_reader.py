"""Reads the refresh topic from offsets the sensor keeps in its cursor.

``assign()`` rather than a consumer-group subscription: the sensor, not the group coordinator,
owns the position, so a tick that raises re-reads exactly the same offsets, and no rebalance
wait (half the session timeout on the embedded broker) slows a tick. The group is still told
the offsets of the last *durable* cursor, best effort, so operators see lag in their usual tools.
"""

from __future__ import annotations

import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel

from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.cursor import StartFrom, TopicCursor, new_epoch
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.printable import printable

__all__ = ["PollLimits", "PollResult", "TopicCursor", "TopicReader"]

ADMIN_SECONDS = 3.0


class PollLimits(BaseModel):
    max_messages: int = 500
    max_seconds: float = 10.0
    # Keys and values read in one tick; broker-accepted messages can be many megabytes each.
    max_bytes: int = 64 * 1024 * 1024
    # Quiet time that ends a tick once messages flowed. Before the first one the poll waits up
    # to ``first_message_seconds``: the consumer may still be connecting, and the sensor uses it
    # as a long poll, so a message that arrives meanwhile ends the wait at once.
    idle_seconds: float = 0.5
    first_message_seconds: float = 2.0


class PollResult(BaseModel):
    messages: list[ConsumedMessage]
    cursor: TopicCursor
    notes: list[str]


def consumed(msg: Message, epoch: str, notes: list[str]) -> ConsumedMessage:
    """Our model of a fetched record. Header names are decoded from UTF-8 lazily by
    confluent-kafka; a producer that wrote others would make ``headers()`` raise on every tick,
    so such headers are dropped, with a note, and the message goes on like any other."""
    try:
        headers = list(msg.headers() or [])
    except UnicodeDecodeError:
        headers = []
        notes.append(
            f"{msg.topic()}:{msg.partition()}:{msg.offset()}: header names are not UTF-8; "
            "headers dropped"
        )
    timestamp_type, timestamp = msg.timestamp()
    return ConsumedMessage(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=headers,
        epoch=epoch,
        timestamp_ms=None if timestamp_type == TIMESTAMP_NOT_AVAILABLE else timestamp,
    )


class TopicReader:
    def __init__(
        self,
        connection: KafkaConnection,
        topic: str,
        group_id: str,
        fetch_wait_max_ms: int | None = None,
        start_from: StartFrom = StartFrom.EARLIEST,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self.start_from = start_from
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
                    # Bounds a synchronous commit while the group coordinator is unreachable:
                    # it waited 45 s at the default (measured), most of a sensor tick's 60 s.
                    "session.timeout.ms": 6000,
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

    def describe(self, timeout: float = ADMIN_SECONDS) -> tuple[str | None, list[int]]:
        """The topic's id and partitions; (None, []) when it does not exist (yet)."""
        future = self._admin.describe_topics(TopicCollection([self.topic]))[self.topic]
        try:
            description = future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None, []
            raise
        return str(description.topic_id), sorted(p.id for p in description.partitions)

    def commit(self, durable: TopicCursor) -> str | None:
        """Tell the consumer group how far the durable cursor got (lag visibility only).

        Best effort: the broker refuses a commit while another consumer is a member of the
        group (the old consumer during cutover), and ingestion must not wait for that. Returns
        why it was refused, for the tick log."""
        if not durable.offsets:
            return None
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in durable.offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            return (
                f"lag offsets not committed to consumer group {self.group_id!r} "
                f"({printable(exc.args[0].str(), 120)}); reading is unaffected"
            )
        return None

    def start_offsets(self, partitions: list[int]) -> tuple[dict[int, int], str]:
        """Where a cursor that never read the topic begins, and a note saying so. Partitions
        left out are read from the earliest offset."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        if self.start_from is StartFrom.EARLIEST:
            return {}, "no cursor yet: reading from the earliest offsets"
        if self.start_from is StartFrom.LATEST:
            offsets = {
                tp.partition: self._consumer.get_watermark_offsets(tp, timeout=ADMIN_SECONDS)[1]
                for tp in tps
            }
            return offsets, f"no cursor yet: starting at the latest offsets {offsets}"
        committed = self._consumer.committed(tps, timeout=ADMIN_SECONDS)
        offsets = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
        return offsets, (
            f"no cursor yet: starting at the committed offsets of consumer group "
            f"{self.group_id!r}: {offsets}, and at the earliest offset where none is committed"
        )

    def poll(self, cursor: TopicCursor, limits: PollLimits) -> PollResult:
        notes: list[str] = []
        topic_id, partitions = self.describe()
        if not partitions:
            return PollResult(messages=[], cursor=cursor, notes=[f"topic {self.topic} not found"])
        if cursor.topic_id == topic_id:
            # The cursor we were handed is durable (the daemon saved it after the last good tick).
            refused = self.commit(cursor)
            notes += [refused] if refused else []
        elif cursor.topic_id is None:
            offsets, note = self.start_offsets(partitions)
            cursor = cursor.model_copy(update={"offsets": offsets})
            notes.append(note)
        else:
            old_id, cursor = cursor.topic_id, TopicCursor(topic=self.topic)
            notes.append(
                f"topic {self.topic} was recreated (id {old_id} -> {topic_id}); re-reading "
                f"every partition from the earliest offset under a new epoch {cursor.epoch}"
            )
        offsets = dict(cursor.offsets)
        epoch = cursor.epoch
        # The consumer's own metadata request before assign(): without it the embedded broker
        # answered the first fetch ~0.5 s late (measured in benchmarks/run.py).
        self._consumer.list_topics(self.topic, timeout=ADMIN_SECONDS)
        for p in sorted(set(offsets) - set(partitions)):
            notes.append(f"partition {p} is gone from {self.topic}; keeping its offset")
        new = [p for p in partitions if p not in offsets]
        if new and cursor.offsets:
            notes.append(f"partitions {new}: reading them from the earliest offset")
        self._consumer.assign(
            [TopicPartition(self.topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in partitions]
        )
        messages: list[ConsumedMessage] = []
        size = 0
        started = last_message = time.monotonic()
        while len(messages) < limits.max_messages and size < limits.max_bytes:
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
                    if self._out_of_range(msg, offsets, notes):
                        epoch = new_epoch()
                        notes.append(f"new cursor epoch {epoch}: re-read positions get new keys")
                    continue
                last_message = time.monotonic()
                offsets[msg.partition()] = msg.offset() + 1
                messages.append(consumed(msg, epoch, notes))
                size += len(msg.value() or b"") + len(msg.key() or b"")
        self._consumer.unassign()
        next_cursor = cursor.model_copy(
            update={"offsets": offsets, "topic_id": topic_id, "epoch": epoch}
        )
        return PollResult(messages=messages, cursor=next_cursor, notes=notes)

    def _out_of_range(self, msg: Message, offsets: dict[int, int], notes: list[str]) -> bool:
        """Offsets went backwards under the cursor (the broker lost or truncated its log): say
        so and re-read the partition from its start rather than stall on an offset that will
        never come. Other errors: transient ones are noted, the rest raise."""
        err: KafkaError = msg.error()
        partition = msg.partition()
        if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE) and (
            partition is not None and partition >= 0
        ):
            notes.append(
                f"partition {partition}: offset {offsets.get(partition)} is out of range "
                "(broker log reset?); re-reading it from the earliest offset"
            )
            offsets.pop(partition, None)
            self._consumer.seek(TopicPartition(self.topic, partition, OFFSET_BEGINNING))
            return True
        if err.fatal() or not err.retriable():
            raise KafkaException(err)
        notes.append(f"transient Kafka error: {printable(err.str())}")
        return False
