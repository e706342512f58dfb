"""Turns one tick's messages into runs, coalesced duplicates and dead letters.

Pure: no Kafka, no Dagster; every consumed message lands in exactly one of: the message a run is
keyed by, a coalesced event of that run, or a dead letter.

Run keys are chosen so that Dagster's run-key dedupe (a used key is skipped forever) can never
swallow an event:
- Events for one account in one tick are one run keyed by the group's *last* message. A key
  Dagster has already used therefore stands for a run requested after every event it covers
  was read; an event published later has a later position, hence another key.
- A replayed dead letter (header ``dlq-replay-of``) is its own run, keyed by that header and the
  account, never coalesced with other events: replaying the same dead letter twice maps to the
  same key, so Dagster runs it once, and no ordinary event is ever folded into such a key.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from ig_refresh_dagster.intake.dlq_headers import REPLAY_OF
from ig_refresh_dagster.intake.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RefreshEvent,
    Rejection,
    parse_event,
)
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.printable import printable_bytes


class PlannedRun(BaseModel):
    account_id: str
    run_key: str
    # ``topic:partition:offset`` of the message the run is keyed by.
    source: str
    scheduled_at: str
    # Positions of the other events this run covers.
    coalesced: list[str] = []
    # The dead letter this run replays (``dlq-replay-of``), shortened for a tag.
    replay_of: str | None = None


class TickPlan(BaseModel):
    runs: list[PlannedRun]
    dead_letters: list[tuple[ConsumedMessage, Rejection]]

    @property
    def coalesced_count(self) -> int:
        return sum(len(run.coalesced) for run in self.runs)


def replay_run_key(replay_of: bytes, account_id: str) -> str:
    """Stable across cursor epochs (a replay read twice is one run), distinct per account (a
    forged header cannot hide another account's event)."""
    digest = hashlib.sha256(replay_of + b"\0" + account_id.encode()).hexdigest()
    return f"replay-{digest[:20]}"


def _group_key(message: ConsumedMessage, event: RefreshEvent) -> str:
    replay_of = message.header(REPLAY_OF)
    return replay_run_key(replay_of, event.account_id) if replay_of else event.account_id


def _run(group_key: str, members: list[tuple[ConsumedMessage, RefreshEvent]]) -> PlannedRun:
    last, event = members[-1]
    replay_of = last.header(REPLAY_OF)
    return PlannedRun(
        account_id=event.account_id,
        run_key=group_key if replay_of else last.run_key,
        source=last.position,
        scheduled_at=event.scheduledAt.isoformat(),
        coalesced=[message.position for message, _ in members[:-1]],
        replay_of=printable_bytes(replay_of, 120) if replay_of else None,
    )


def plan_tick(
    messages: list[ConsumedMessage], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> TickPlan:
    groups: dict[str, list[tuple[ConsumedMessage, RefreshEvent]]] = {}
    dead: list[tuple[ConsumedMessage, Rejection]] = []
    for message in messages:
        parsed = parse_event(message.value, max_bytes)
        if isinstance(parsed, Rejection):
            dead.append((message, parsed))
        else:
            groups.setdefault(_group_key(message, parsed), []).append((message, parsed))
    return TickPlan(runs=[_run(key, members) for key, members in groups.items()], dead_letters=dead)
