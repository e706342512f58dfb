"""Re-publishes selected dead letters' originals to the refresh topic (``ig-refresh dlq replay``).

A replay is the original key, value and headers (minus every ``dlq-*`` header) plus
``dlq-replay-of``, naming the dead letter it came from: its position and its timestamp, so a
position reused by a recreated dead-letter topic names a different letter. The sensor keys a
replayed event's run by that header (``tick_plan.replay_run_key``), never by its new offset:
replaying the same dead letter twice requests the same run key, which Dagster runs once.
"""

from __future__ import annotations

from typing import Literal

from confluent_kafka import KafkaError, Message, Producer
from pydantic import BaseModel

from ig_refresh_dagster.intake import dlq_headers
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.dead_letter_log import DeadLetterRecord, ReplaySelection
from ig_refresh_dagster.intake.printable import printable

FLUSH_SECONDS = 30.0


class ReplayItem(BaseModel):
    dead_letter: str
    source: str
    reason: str
    outcome: Literal["replayed", "would replay", "skipped: truncated"]


class ReplayReport(BaseModel):
    target_topic: str
    dry_run: bool
    selected: int
    replayed: int
    items: list[ReplayItem]


class ReplayError(RuntimeError):
    pass


def replay_of(record: DeadLetterRecord) -> bytes:
    at = record.dead_lettered_at
    stamp = "" if at is None else f"@{round(at.timestamp() * 1000)}"
    return f"{record.position}{stamp}".encode()


def replay(
    connection: KafkaConnection,
    records: list[DeadLetterRecord],
    selection: ReplaySelection,
    target_topic: str,
    dry_run: bool,
) -> ReplayReport:
    chosen = [record for record in records if selection.matches(record)]
    producer = None if dry_run else Producer(connection.client_config(acks="all"))
    failures: list[str] = []
    items: list[ReplayItem] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(printable(error.str(), 120))

    for record in chosen:
        item = {"dead_letter": record.position, "source": record.source, "reason": record.reason}
        if record.truncated:
            # Only part of the original was kept (its sha256 and size are in the headers).
            items.append(ReplayItem(**item, outcome="skipped: truncated"))
            continue
        if producer is not None:
            producer.produce(
                target_topic,
                key=record.key,
                value=record.value,
                headers=[*record.original_headers, (dlq_headers.REPLAY_OF, replay_of(record))],
                on_delivery=delivered,
            )
        items.append(ReplayItem(**item, outcome="would replay" if dry_run else "replayed"))
    unconfirmed = producer.flush(FLUSH_SECONDS) if producer is not None else 0
    if unconfirmed or failures:
        raise ReplayError(
            f"replay to {target_topic!r}: {unconfirmed} unconfirmed, {len(failures)} failed "
            f"({'; '.join(failures[:3])}); replaying the same selection again is safe"
        )
    return ReplayReport(
        target_topic=target_topic,
        dry_run=dry_run,
        selected=len(chosen),
        replayed=0 if dry_run else sum(i.outcome == "replayed" for i in items),
        items=items,
    )
