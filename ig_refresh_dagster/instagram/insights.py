"""Insights of accounts whose owners authorised us: account metrics for one UTC day and lifetime
metrics of their recent media, read with the owner's token (Business Discovery cannot see
insights).

What is asked comes from ``metrics``: the metrics the configured Graph version offers, for
media those of its product type (which Business Discovery reports with each recent media).
``follower_count`` covers only the last 30 days, excluding the current day.

Should Graph still reject a metric (error 100 about a metric), it is dropped, the request is
made again without it, and it is reported in ``unsupported`` instead of failing the fetch; a
media metric rejected for one kind of media (media type and product type) is not asked of the
same kind again in that fetch. Every other error maps onto the same taxonomy as the Business
Discovery client. The owner's token goes in the ``Authorization`` header only and is scrubbed
from every error and log line; Graph's ``paging`` links, which quote it back, are never read.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from ig_refresh_dagster.instagram.counts import MAX_COUNT
from ig_refresh_dagster.instagram.errors import PermanentError
from ig_refresh_dagster.instagram.metrics import (
    account_series_metrics,
    account_total_metrics,
    graph_major,
    media_metrics,
)
from ig_refresh_dagster.instagram.models import RecentMedia
from ig_refresh_dagster.instagram.transport import GraphTransport, error_parts

log = logging.getLogger(__name__)

# Media metrics in ``unsupported`` carry this prefix, so they are not mistaken for the
# account metric of the same name.
MEDIA_PREFIX = "media:"

# Graph ids are numeric; anything else could change the request path.
_GRAPH_ID = re.compile(r"[0-9]{1,32}")
_METRIC_INDEX = re.compile(r"metric\[(\d+)\]")
# "metric[2] must be one of the following values: reach, ..." lists the *valid* metrics: names
# after such a phrase are not the rejected ones.
_VALID_LIST = re.compile(r"one of the following|supported values|valid values", re.IGNORECASE)
# Object missing or not readable with this token: about the id, not a metric.
_NOT_A_METRIC_SUBCODES = frozenset({33})
# Graph refuses insights for one media rather than for the token: a story with too few viewers
# (code 10, "Not enough viewers for the media to show insights") or media posted before the
# account became a business account (subcode 2108006).
_MEDIA_WITHOUT_INSIGHTS_SUBCODES = frozenset({2108006})


class MediaInsights(BaseModel):
    """Lifetime metrics of one media; empty when Graph keeps no insights for it (a story with
    too few viewers, media posted before the business conversion)."""

    media_id: str
    metrics: dict[str, int | float] = Field(default_factory=dict)


class AccountInsights(BaseModel):
    """One account's insights for one UTC day. ``unsupported`` names the metrics Graph
    rejected (media ones prefixed ``media:``), so a gap reads as "not offered", not "zero"."""

    user_id: str
    day: date
    metrics: dict[str, int | float] = Field(default_factory=dict)
    media: list[MediaInsights] = Field(default_factory=list)
    unsupported: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class _Rejection:
    """Graph refused the request because of metrics; ``metrics`` are those it named."""

    metrics: list[str]
    message: str


def day_bounds(day: date) -> tuple[int, int]:
    """``since``/``until`` (unix seconds) covering the UTC day."""
    start = int(datetime.combine(day, time.min, tzinfo=UTC).timestamp())
    return start, start + 86400


def _media(item: RecentMedia | str) -> RecentMedia:
    """The media with a checked id; a bare id is a media of unknown type."""
    if isinstance(item, RecentMedia):
        return item.model_copy(update={"id": _graph_id(item.id, "media id")})
    return RecentMedia(id=_graph_id(item, "media id"))


def _graph_id(value: str, what: str) -> str:
    text = str(value).strip()
    if not _GRAPH_ID.fullmatch(text):
        raise PermanentError(f"{what} {text[:40]!r} is not a Graph id", reason="invalid_graph_id")
    return text


def _number(value: Any) -> int | float | None:
    """A metric value, or None (unknown): every metric asked is a non-negative count or
    duration, so a negative, non-finite or absurd value (beyond ``MAX_COUNT``) is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) and 0 <= value <= MAX_COUNT else None


def _end_day(value: Any) -> date | None:
    """The day a ``period=day`` point covers: Graph stamps it with the end of that day
    (07:00/08:00 UTC when days follow Pacific time, 00:00 UTC otherwise)."""
    if not isinstance(value, str):
        return None
    try:
        end = datetime.fromisoformat(value)
    except ValueError:
        return None
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return (end.astimezone(UTC) - timedelta(days=1)).date()


def _metric_value(item: dict[str, Any], day: date | None) -> int | float | None:
    """The value of one ``data`` entry: ``total_value.value``, or from ``values`` the point
    for ``day`` (a lifetime metric's single undated point when ``day`` is None or absent)."""
    total = item.get("total_value")
    if isinstance(total, dict):
        return _number(total.get("value"))
    values = item.get("values")
    points = [p for p in values if isinstance(p, dict)] if isinstance(values, list) else []
    if day is not None:
        for point in points:
            if _end_day(point.get("end_time")) == day:
                return _number(point.get("value"))
    if len(points) == 1 and points[0].get("end_time") is None:
        return _number(points[0].get("value"))
    return None


def _rejected_metrics(error: Any, requested: list[str], token: str) -> _Rejection | None:
    """The metrics a Graph error rejects, or None when the error is not about metrics.

    Graph names them as ``metric[i]`` (an index into the request) or by name ("the impressions
    metric is no longer supported", "does not support the views metric"); an error 100 about
    metrics that names none gives an empty list.
    """
    code, subcode, message = error_parts(error, token)
    # Read what Graph said, not its redacted form: redaction hides any 6-character piece of a
    # secret, and a secret may share one with "metric" or a metric's name. Only our own metric
    # names are taken from it; the message kept for display is the redacted one.
    said = _raw_message(error)
    if code != 100 or subcode in _NOT_A_METRIC_SUBCODES or "metric" not in said.lower():
        return None
    indexes = [int(i) for i in _METRIC_INDEX.findall(said)]
    named = [requested[i] for i in indexes if i < len(requested)]
    if not indexes:
        head = _VALID_LIST.split(said, maxsplit=1)[0]
        named = [m for m in requested if re.search(rf"(?<!\w){re.escape(m)}(?!\w)", head)]
    return _Rejection(list(dict.fromkeys(named)), message)


def _raw_message(error: Any) -> str:
    """Graph's own message, for deciding only: never logged or stored as is."""
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or "")[:300]


def _media_without_insights(error: Any, token: str) -> bool:
    code, subcode, _ = error_parts(error, token)
    if subcode in _MEDIA_WITHOUT_INSIGHTS_SUBCODES:
        return True
    return code == 10 and "not enough viewers" in _raw_message(error).lower()


class _MediaWithoutInsights(Exception):
    """Internal: Graph has no insights for this one media."""


class InsightsClient:
    """Reads insights with an account owner's token. A 190 here concerns that owner's token
    only: callers must not take it as our own Business Discovery token failing."""

    def __init__(self, transport: GraphTransport) -> None:
        self._transport = transport
        self.graph_major = graph_major(transport.base_url)

    def fetch(
        self,
        user_id: str,
        access_token: str | SecretStr,
        media: Sequence[RecentMedia | str],
        day: date,
    ) -> AccountInsights:
        """Account metrics for UTC ``day`` and lifetime metrics of ``media``: RecentMedia
        (whose media and product types choose the metrics) or bare media ids (types unknown).

        Pass a finished day (yesterday or earlier): ``follower_count`` excludes the current day
        and Graph may take up to 48 hours to settle a day's numbers.
        """
        token = (
            access_token.get_secret_value() if isinstance(access_token, SecretStr) else access_token
        )
        if not token:
            raise ValueError("the account owner's access token is required for insights")
        if isinstance(day, datetime):
            day = day.astimezone(UTC).date() if day.tzinfo else day.date()
        user = _graph_id(user_id, "IG user id")
        checked_media = [_media(m) for m in media]
        since, until = day_bounds(day)
        window = {"period": "day", "since": str(since), "until": str(until)}
        path = f"{user}/insights"
        subject = f"insights of IG user {user}"

        metrics: dict[str, int | float] = {}
        unsupported: list[str] = []
        for names, params in (
            (account_series_metrics(self.graph_major), window),
            (account_total_metrics(self.graph_major), {**window, "metric_type": "total_value"}),
        ):
            data, rejected = self._metrics(path, list(names), params, token, subject)
            metrics.update(_values(data, names, day))
            unsupported += rejected

        media_insights = []
        refused: dict[tuple[str | None, str | None], set[str]] = {}
        for item in checked_media:
            kind = (item.media_type, item.media_product_type)
            names = [
                m
                for m in media_metrics(self.graph_major, *kind)
                if m not in refused.get(kind, set())
            ]
            insights, rejected = self._media(item.id, names, token)
            media_insights.append(insights)
            refused.setdefault(kind, set()).update(rejected)
            unsupported += [f"{MEDIA_PREFIX}{m}" for m in rejected]
        return AccountInsights(
            user_id=user,
            day=day,
            metrics=metrics,
            media=media_insights,
            unsupported=list(dict.fromkeys(unsupported)),
        )

    def _media(
        self, media_id: str, names: list[str], token: str
    ) -> tuple[MediaInsights, list[str]]:
        path = f"{media_id}/insights"
        try:
            data, rejected = self._metrics(
                path, names, {}, token, f"insights of media {media_id}", media=True
            )
        except _MediaWithoutInsights:
            return MediaInsights(media_id=media_id), []
        return MediaInsights(media_id=media_id, metrics=_values(data, names, None)), rejected

    def _metrics(
        self,
        path: str,
        metrics: list[str],
        params: dict[str, str],
        token: str,
        subject: str,
        media: bool = False,
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The ``data`` entries for ``metrics`` and the metrics Graph rejected, asking again
        without the rejected ones (one at a time when Graph does not say which)."""
        remaining = list(metrics)
        rejected: list[str] = []
        while remaining:
            query = {**params, "metric": ",".join(remaining)}
            outcome = self._get(path, query, remaining, token, subject, media)
            if not isinstance(outcome, _Rejection):
                return [d for d in outcome if d.get("name") in remaining], rejected
            named = [m for m in outcome.metrics if m in remaining]
            if not named and len(remaining) > 1:
                data: list[dict[str, Any]] = []
                for metric in remaining:
                    part, part_rejected = self._metrics(
                        path, [metric], params, token, subject, media
                    )
                    data += part
                    rejected += part_rejected
                return data, rejected
            dropped = named or remaining
            log.info(
                "Graph rejected metric(s) %s for %s; recorded as unsupported: %s",
                ",".join(dropped),
                subject,
                outcome.message,
            )
            rejected += dropped
            remaining = [m for m in remaining if m not in dropped]
        return [], rejected

    def _get(
        self,
        path: str,
        params: dict[str, str],
        requested: list[str],
        token: str,
        subject: str,
        media: bool,
    ) -> list[dict[str, Any]] | _Rejection:
        answer = self._transport.get(path, params, token, subject)
        if answer.failed:
            rejection = _rejected_metrics(answer.error, requested, token)
            if rejection is not None:
                return rejection
            if media and _media_without_insights(answer.error, token):
                message = error_parts(answer.error, token)[2]
                log.info("Graph has no insights for %s: %s", subject, message)
                raise _MediaWithoutInsights
            answer.raise_for_error(token)
        data = answer.body.get("data")
        if not isinstance(data, list):
            raise PermanentError(
                f"Graph answered for {subject} without a data list",
                reason="graph_unexpected_body",
                usage=answer.usage,
            )
        return [item for item in data if isinstance(item, dict)]


def _values(
    data: list[dict[str, Any]], wanted: Sequence[str], day: date | None
) -> dict[str, int | float]:
    values: dict[str, int | float] = {}
    for item in data:
        name = item.get("name")
        if name in wanted:
            value = _metric_value(item, day)
            if value is not None:
                values[name] = value
    return values
