"""The dead-letter topic read back: typed records, a summary by reason and age, and the
selection an operator replays (``ig-refresh dlq list`` / ``dlq replay``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from pydantic import BaseModel

from ig_refresh_dagster.intake import dlq_headers
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.cursor import TopicCursor
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.printable import printable_bytes
from ig_refresh_dagster.intake.topic_reader import PollLimits, TopicReader

# Assigned reads only: the group id is required by the client, and nothing is ever committed.
READER_GROUP = "ig-refresh-dlq-cli"


class DeadLetterRecord(BaseModel):
    topic: str
    partition: int
    offset: int
    dead_lettered_at: datetime | None
    reason: str
    detail: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    truncated: bool
    key: bytes | None
    value: bytes | None
    # The original message's headers: everything but ``dlq-*``.
    original_headers: list[tuple[str, bytes | None]]

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def source(self) -> str:
        return f"{self.source_topic}:{self.source_partition}:{self.source_offset}"

    @classmethod
    def from_message(cls, message: ConsumedMessage) -> DeadLetterRecord:
        def text(name: str) -> str | None:
            raw = message.header(name)
            return None if raw is None else printable_bytes(raw)

        def number(name: str) -> int | None:
            raw = text(name)
            return int(raw) if raw is not None and raw.isdigit() else None

        at = message.timestamp_ms
        return cls(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            dead_lettered_at=None if at is None else datetime.fromtimestamp(at / 1000, UTC),
            reason=text(dlq_headers.REASON) or "unknown",
            detail=text(dlq_headers.DETAIL) or "",
            source_topic=text(dlq_headers.SOURCE_TOPIC),
            source_partition=number(dlq_headers.SOURCE_PARTITION),
            source_offset=number(dlq_headers.SOURCE_OFFSET),
            truncated=message.header(dlq_headers.TRUNCATED) is not None,
            key=message.key,
            value=message.value,
            original_headers=[
                (k, v) for k, v in message.headers if not k.startswith(dlq_headers.PREFIX)
            ],
        )


class ReasonSummary(BaseModel):
    reason: str
    count: int
    oldest: datetime | None
    newest: datetime | None


class DeadLetterSummary(BaseModel):
    topic: str
    total: int
    oldest: datetime | None
    newest: datetime | None
    reasons: list[ReasonSummary]


def _span(records: list[DeadLetterRecord]) -> tuple[datetime | None, datetime | None]:
    times = [r.dead_lettered_at for r in records if r.dead_lettered_at is not None]
    return (min(times), max(times)) if times else (None, None)


def summarise(topic: str, records: list[DeadLetterRecord]) -> DeadLetterSummary:
    by_reason: dict[str, list[DeadLetterRecord]] = defaultdict(list)
    for record in records:
        by_reason[record.reason].append(record)
    reasons = [
        ReasonSummary(reason=reason, count=len(group), oldest=span[0], newest=span[1])
        for reason, group in sorted(by_reason.items(), key=lambda item: -len(item[1]))
        for span in [_span(group)]
    ]
    oldest, newest = _span(records)
    return DeadLetterSummary(
        topic=topic, total=len(records), oldest=oldest, newest=newest, reasons=reasons
    )


class ReplaySelection(BaseModel):
    """Which dead letters to replay; each filter given narrows the selection."""

    reasons: set[str] = set()
    # (partition, offset) of the original message in the refresh topic.
    source_offsets: set[tuple[int, int]] = set()
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        at = record.dead_lettered_at
        return (
            (not self.reasons or record.reason in self.reasons)
            and (
                not self.source_offsets
                or (record.source_partition, record.source_offset) in self.source_offsets
            )
            and (self.since is None or (at is not None and at >= self.since))
            and (self.until is None or (at is not None and at < self.until))
        )


class DeadLetterTopicMissing(RuntimeError):
    pass


def read_dead_letters(
    connection: KafkaConnection, topic: str, limit: int, quiet_seconds: float = 1.5
) -> list[DeadLetterRecord]:
    """Every dead letter from the earliest offset, up to ``limit``. The end is where the topic
    stays quiet for ``quiet_seconds``: the embedded broker's high watermark lags, so it cannot
    say where the topic ends."""
    limits = PollLimits(
        max_messages=limit,
        max_seconds=300.0,
        max_bytes=2**40,
        idle_seconds=quiet_seconds,
        first_message_seconds=quiet_seconds * 2,
    )
    with TopicReader(connection, topic, READER_GROUP) as reader:
        polled = reader.poll(TopicCursor(topic=topic), limits)
    if polled.cursor.topic_id is None:
        raise DeadLetterTopicMissing(f"dead-letter topic {topic!r} does not exist")
    return [DeadLetterRecord.from_message(message) for message in polled.messages]
