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
    generation: int = 0

    @property
    def source(self) -> str:
        """The run key: ``topic:partition:offset`` (``topic@N:…`` after a topic was recreated)."""
        topic = self.topic if self.generation == 0 else f"{self.topic}@{self.generation}"
        return f"{topic}:{self.partition}:{self.offset}"
