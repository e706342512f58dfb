"""Graph API usage headers, read so we slow down before Meta throttles us.

``X-App-Usage``: ``{"call_count", "total_cputime", "total_time"}``, each a percentage of the
app's rolling-hour allowance. ``X-Business-Use-Case-Usage`` (Instagram Platform requests are
under Business Use Case limits): ``{"<business id>": [{"type", "call_count", "total_cputime",
"total_time", "estimated_time_to_regain_access"}]}``, the last in minutes. Headers are advisory:
a malformed one is ignored, never an error, and Meta's estimate is capped at a day (Business Use
Case windows are 24 hours long), so one absurd header cannot pause Graph for years.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

APP_USAGE_HEADER = "x-app-usage"
BUC_USAGE_HEADER = "x-business-use-case-usage"
_PERCENT_FIELDS = ("call_count", "total_cputime", "total_time")
MAX_REGAIN_SECONDS = 24 * 3600.0


class ApiUsage(BaseModel):
    """The highest usage percentage reported, and Meta's estimate of when access returns."""

    model_config = ConfigDict(frozen=True)

    max_percent: float | None = None
    regain_after_seconds: float | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _load(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _buc_entries(parsed: Any) -> Iterable[Mapping[str, Any]]:
    if not isinstance(parsed, Mapping):
        return
    for entries in parsed.values():
        if isinstance(entries, Mapping):
            entries = [entries]
        if isinstance(entries, list):
            yield from (e for e in entries if isinstance(e, Mapping))


def parse_usage(headers: Mapping[str, str]) -> ApiUsage | None:
    """ApiUsage from a response's headers, or None if neither header carried anything readable."""
    headers = {str(k).lower(): v for k, v in headers.items()}
    percents: list[float] = []
    regain_minutes: list[float] = []
    app = _load(headers.get(APP_USAGE_HEADER))
    if isinstance(app, Mapping):
        percents.extend(p for p in (_number(app.get(f)) for f in _PERCENT_FIELDS) if p is not None)
    for entry in _buc_entries(_load(headers.get(BUC_USAGE_HEADER))):
        percents.extend(
            p for p in (_number(entry.get(f)) for f in _PERCENT_FIELDS) if p is not None
        )
        minutes = _number(entry.get("estimated_time_to_regain_access"))
        if minutes is not None:
            regain_minutes.append(minutes)
    if not percents and not regain_minutes:
        return None
    return ApiUsage(
        max_percent=max(percents) if percents else None,
        regain_after_seconds=min(max(regain_minutes) * 60.0, MAX_REGAIN_SECONDS)
        if regain_minutes
        else None,
    )
