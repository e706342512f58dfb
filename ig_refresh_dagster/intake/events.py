"""Refresh events as they arrive on Kafka, and the reasons one is rejected.

Parsing never raises, whatever the bytes: every message either becomes a ``RefreshEvent`` or a
``Rejection`` that names why (its detail short and printable), so the sensor dead-letters it
instead of crashing on it every tick or dropping it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StrictStr, StringConstraints, ValidationError

from ig_refresh_dagster.intake import strict_json
from ig_refresh_dagster.intake.printable import printable
from ig_refresh_dagster.partitions import ACCOUNT_ID_PATTERN

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024

ObjectIdHex = Annotated[StrictStr, StringConstraints(pattern=rf"^{ACCOUNT_ID_PATTERN}$")]


class RejectReason(StrEnum):
    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    DUPLICATE_KEY = "duplicate_key"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_FIELDS = "invalid_fields"
    UNSUPPORTED_PLATFORM = "unsupported_platform"
    # The parser itself raised (a bug of ours, not the producer's): the message is kept in the
    # dead-letter topic, replayable once fixed, rather than failing every tick.
    PARSER_ERROR = "parser_error"


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


def _reject(reason: RejectReason, detail: str) -> Rejection:
    return Rejection(reason=reason, detail=printable(detail))


def _parse(value: bytes | None, max_bytes: int) -> RefreshEvent | Rejection:
    if not value:
        return _reject(RejectReason.MALFORMED_JSON, "empty value (or a tombstone)")
    if len(value) > max_bytes:
        return _reject(RejectReason.OVERSIZED, f"{len(value)} bytes > limit {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject(RejectReason.MALFORMED_JSON, f"not UTF-8 (byte {exc.start})")
    try:
        payload = strict_json.loads(text)
    except strict_json.DuplicateKey as exc:
        return _reject(RejectReason.DUPLICATE_KEY, str(exc))
    except ValueError as exc:
        return _reject(RejectReason.MALFORMED_JSON, str(exc))
    if not isinstance(payload, dict):
        return _reject(RejectReason.NOT_AN_OBJECT, f"got JSON {type(payload).__name__}")
    try:
        event = RefreshEvent.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'event'}: {err['msg']}" for err in exc.errors()
        )
        return _reject(RejectReason.INVALID_FIELDS, problems)
    if event.platform.strip().lower() != "instagram":
        return _reject(RejectReason.UNSUPPORTED_PLATFORM, f"platform {event.platform[:50]!r}")
    return event


def parse_event(
    value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> RefreshEvent | Rejection:
    try:
        return _parse(value, max_bytes)
    except Exception as exc:  # see RejectReason.PARSER_ERROR
        return _reject(RejectReason.PARSER_ERROR, f"{type(exc).__name__}: {exc}")
