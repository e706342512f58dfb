"""One consumed Kafka message, as every intake stage sees it (reader, planner, dead letters)."""

from __future__ import annotations

from pydantic import BaseModel


class ConsumedMessage(BaseModel):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = []
    # The cursor epoch the message was read under (``cursor.py``): part of its run key, so a
    # position read again after the cursor was lost or the log reset gets a key never used.
    epoch: str
    # Kafka's timestamp in epoch milliseconds, when the broker gave one.
    timestamp_ms: int | None = None

    @property
    def position(self) -> str:
        """``topic:partition:offset``, for people (logs, tags, dead-letter headers)."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def run_key(self) -> str:
        """``epoch:partition:offset``: unique across cursor epochs, short enough for a tick."""
        return f"{self.epoch}:{self.partition}:{self.offset}"

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name`` (headers may repeat; later ones win)."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None
