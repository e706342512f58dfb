"""Typed results of the optional steps, as the log entry, run metadata and the demo read them."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class InsightsStatus(StrEnum):
    STORED = "stored"
    SKIPPED = "skipped"
    FAILED = "failed"


class InsightsOutcome(BaseModel):
    """What the insights step did. It never fails the refresh, so its failure is data."""

    model_config = ConfigDict(frozen=True)

    status: InsightsStatus
    detail: str
    day: date | None = None
    account_metrics: int = 0
    media: int = 0
    unsupported: list[str] = []

    def summary(self) -> str:
        return f"{self.status.value}: {self.detail}"
