"""Turns one tick's messages into runs, coalesced duplicates and dead letters.

Pure: no Kafka, no Dagster; every consumed message lands in exactly one of the three lists.
"""

from __future__ import annotations

from pydantic import BaseModel

from ig_refresh_dagster.intake.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RefreshEvent,
    Rejection,
    parse_event,
)
from ig_refresh_dagster.intake.messages import ConsumedMessage


class PlannedRun(BaseModel):
    """One run per account per tick; keyed by the first message's position."""

    account_id: str
    run_key: str
    scheduled_at: str
    coalesced: list[str] = []


class TickPlan(BaseModel):
    runs: list[PlannedRun]
    dead_letters: list[tuple[ConsumedMessage, Rejection]]

    @property
    def coalesced_count(self) -> int:
        return sum(len(run.coalesced) for run in self.runs)


def plan_tick(
    messages: list[ConsumedMessage], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> TickPlan:
    runs: dict[str, PlannedRun] = {}
    dead: list[tuple[ConsumedMessage, Rejection]] = []
    for message in messages:
        parsed = parse_event(message.value, max_bytes)
        if isinstance(parsed, Rejection):
            dead.append((message, parsed))
            continue
        event: RefreshEvent = parsed
        existing = runs.get(event.account_id)
        if existing is not None:
            existing.coalesced.append(message.source)
            continue
        runs[event.account_id] = PlannedRun(
            account_id=event.account_id,
            run_key=message.source,
            scheduled_at=event.scheduledAt.isoformat(),
        )
    return TickPlan(runs=list(runs.values()), dead_letters=dead)
