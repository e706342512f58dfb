"""The sensor cursor: where to read next, and the epoch that run keys are made under.

Dagster skips a run key forever once any run of the sensor used it. Positions alone
(``partition:offset``) come round again when the cursor is cleared or lost, when the topic is
recreated, or when a log is reset under the cursor (out-of-range offsets); each of those starts
a new *epoch*, a random id that is part of every run key read under it, so a position read
again is a new key and its event is refreshed (at least once), never silently skipped.
"""

from __future__ import annotations

import secrets
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError

from ig_refresh_dagster.intake.printable import printable


def new_epoch() -> str:
    """48 random bits: a handful of epochs over a deployment's life never collide."""
    return secrets.token_hex(6)


class StartFrom(StrEnum):
    """Where a cursor that has never read the topic starts (``INSTAGRAM_REFRESH_START_FROM``)."""

    COMMITTED = "committed"
    EARLIEST = "earliest"
    LATEST = "latest"

    @classmethod
    def parse(cls, raw: str) -> StartFrom:
        try:
            return cls(raw.strip().lower())
        except ValueError:
            allowed = " | ".join(member.value for member in cls)
            raise ValueError(
                f"INSTAGRAM_REFRESH_START_FROM must be one of {allowed}; got {printable(raw, 40)!r}"
            ) from None


class TopicCursor(BaseModel):
    """Next offset to read per partition; small enough to live in a Dagster sensor cursor."""

    topic: str
    epoch: str = Field(default_factory=new_epoch)
    offsets: dict[int, int] = {}
    # Kafka's id of the topic the offsets belong to; None until the cursor first found the topic
    # (it then starts where ``StartFrom`` says). A different id means the topic was recreated.
    topic_id: str | None = None

    @classmethod
    def parse(cls, raw: str | None, topic: str) -> tuple[TopicCursor, str | None]:
        """The cursor, and a note when the stored one was unusable or for another topic."""
        if not raw:
            return cls(topic=topic), None
        try:
            cursor = cls.model_validate_json(raw)
        except ValidationError:
            note = f"cursor {printable(raw, 100)!r} is unreadable; starting afresh"
            return cls(topic=topic), note
        if cursor.topic != topic:
            return cls(topic=topic), f"cursor was for topic {cursor.topic!r}; starting afresh"
        return cursor, None

    def to_json(self) -> str:
        return self.model_copy(
            update={"offsets": dict(sorted(self.offsets.items()))}
        ).model_dump_json()
