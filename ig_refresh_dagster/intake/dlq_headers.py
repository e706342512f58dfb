"""What a dead letter carries: the original key, value and headers, plus ``dlq-*`` headers.

Ours come after the original headers and readers take the last value of a header, so an
original header of the same name can never mask ours. Replays strip every ``dlq-*`` header.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from ig_refresh_dagster.intake.events import Rejection
from ig_refresh_dagster.intake.messages import ConsumedMessage

PREFIX = "dlq-"
REASON = "dlq-reason"
DETAIL = "dlq-detail"
SOURCE_TOPIC = "dlq-source-topic"
SOURCE_PARTITION = "dlq-source-partition"
SOURCE_OFFSET = "dlq-source-offset"
TRUNCATED = "dlq-truncated"
ORIGINAL_SIZE = "dlq-original-size"
ORIGINAL_SHA256 = "dlq-original-sha256"
REPLAY_OF = "dlq-replay-of"

# What a truncated dead letter keeps, per attempt: the first N bytes of the value, original
# headers while they fit in N bytes, and at most KEY_BYTES of the key. The second, smaller cut is
# for a dead-letter topic whose size limit is far below the usual megabyte.
TRUNCATION_STEPS = (16 * 1024, 512)
KEY_BYTES = 256

Headers = list[tuple[str, bytes | None]]


class DeadLetter(BaseModel):
    """One record for the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    truncated: bool = False


def _ours(message: ConsumedMessage, rejection: Rejection) -> Headers:
    return [
        (REASON, rejection.reason.value.encode()),
        (DETAIL, rejection.detail.encode("ascii", "backslashreplace")),
        (SOURCE_TOPIC, message.topic.encode()),
        (SOURCE_PARTITION, str(message.partition).encode()),
        (SOURCE_OFFSET, str(message.offset).encode()),
    ]


def whole(message: ConsumedMessage, rejection: Rejection) -> DeadLetter:
    return DeadLetter(
        key=message.key,
        value=message.value,
        headers=[*message.headers, *_ours(message, rejection)],
    )


def _header_size(header: tuple[str, bytes | None]) -> int:
    return len(header[0].encode("utf-8", "backslashreplace")) + len(header[1] or b"")


def truncated(message: ConsumedMessage, rejection: Rejection, keep: int) -> DeadLetter | None:
    """The dead letter cut to ``keep`` bytes of value and of original headers; None when that
    would cut nothing (so it cannot be smaller than what was refused)."""
    value = message.value or b""
    cut = []
    if len(value) > keep:
        cut.append("value")
    if message.key is not None and len(message.key) > KEY_BYTES:
        cut.append("key")
    kept: Headers = []
    used = 0
    for header in message.headers:
        used += _header_size(header)
        if used > keep:
            cut.append("headers")
            break
        kept.append(header)
    if not cut:
        return None
    added = [
        (TRUNCATED, ",".join(cut).encode()),
        (ORIGINAL_SIZE, str(len(value)).encode()),
        (ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
    ]
    return DeadLetter(
        key=message.key[:KEY_BYTES] if message.key is not None else None,
        value=message.value[:keep] if message.value is not None else None,
        headers=[*kept, *_ours(message, rejection), *added],
        truncated=True,
    )
