"""Refresh events as they arrive on Kafka, and the reasons one is rejected.

Parsing never raises: every message either becomes a ``RefreshEvent`` or a ``Rejection`` that
names why, so the sensor can dead-letter it instead of crashing or dropping it.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StrictStr, StringConstraints, ValidationError

from ig_refresh_dagster.partitions import ACCOUNT_ID_PATTERN

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024

ObjectIdHex = Annotated[StrictStr, StringConstraints(pattern=rf"^{ACCOUNT_ID_PATTERN}$")]


class RejectReason(StrEnum):
    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_FIELDS = "invalid_fields"
    UNSUPPORTED_PLATFORM = "unsupported_platform"


class RefreshEvent(BaseModel):
    """``{accountId, platform, scheduledAt}`` as the scheduler publishes it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    accountId: ObjectIdHex
    platform: StrictStr
    scheduledAt: datetime

    @property
    def account_id(self) -> str:
        """Canonical (lower-case) id: the partition key, so one account has one partition."""
        return self.accountId.lower()


class Rejection(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: RejectReason
    detail: str


def parse_event(
    value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> RefreshEvent | Rejection:
    if value is not None and len(value) > max_bytes:
        return Rejection(
            reason=RejectReason.OVERSIZED, detail=f"{len(value)} bytes > limit {max_bytes}"
        )
    try:
        payload = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        return Rejection(reason=RejectReason.MALFORMED_JSON, detail=str(exc)[:200])
    if not isinstance(payload, dict):
        return Rejection(
            reason=RejectReason.NOT_AN_OBJECT, detail=f"got JSON {type(payload).__name__}"
        )
    try:
        event = RefreshEvent.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'event'}: {err['msg']}" for err in exc.errors()
        )
        return Rejection(reason=RejectReason.INVALID_FIELDS, detail=problems[:500])
    if event.platform.strip().lower() != "instagram":
        return Rejection(
            reason=RejectReason.UNSUPPORTED_PLATFORM, detail=f"platform {event.platform[:50]!r}"
        )
    return event
