"""``Retry-After``, read safely: a server chooses the value, so it is capped and never trusted
to parse.

RFC 9110 allows whole seconds or an HTTP date. Anything else (negative, ``inf``, ``nan``,
``1e12``, a date in the past, text) falls back to the caller's default. However long the server
asks, the wait is at most an hour: a longer pause would idle the fleet on one header's say-so,
and asking again after an hour costs one request.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_SECONDS = 3600.0
_SECONDS = re.compile(r"[0-9]{1,12}")


def retry_after_seconds(value: str | None, default: float, now: datetime | None = None) -> float:
    """Seconds to wait: ``value`` as delay-seconds or an HTTP date, capped at an hour;
    ``default`` when it is missing, unreadable or not in the future."""
    text = (value or "").strip()
    if _SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds <= 0:
        return default
    return min(seconds, MAX_RETRY_AFTER_SECONDS)
