"""What ``/metrics`` reports, one source per query, each over one of the sidecar's kept clients.

Every source returns finished metric families, so a source that fails (its store is down, its
query times out) can be dropped from a scrape on its own: the collector (``metrics.py``) then
reports it as ``ig_refresh_metrics_source_up{source=...} 0`` and serves the rest.

Dates are compared as naive UTC: the embedded litemongo store returns and compares naive UTC
datetimes only, and MongoDB reads a naive datetime as UTC, so the same query holds on both.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ig_refresh_dagster.health.clients import KeptClient
from ig_refresh_dagster.health.daemon import DagsterInstanceView
from ig_refresh_dagster.intake.cursor import TopicCursor
from ig_refresh_dagster.intake.dead_letter_log import DeadLetterRecord
from ig_refresh_dagster.intake.topic_reader import PollLimits, TopicReader
from ig_refresh_dagster.stores.accounts import AccountStore
from ig_refresh_dagster.stores.budget import BudgetStatus, HourlyBudget
from ig_refresh_dagster.stores.eviction import maxmemory_policy, policy_verdict
from ig_refresh_dagster.stores.fetch_memory import FetchMemory
from ig_refresh_dagster.stores.refresh_log import COLLECTION as REFRESH_LOG
from ig_refresh_dagster.stores.refresh_log import DEFERRED, PLATFORM

Families = list[Metric]
Source = Callable[[], Families]

PREFIX = "ig_refresh"
OUTCOME_WINDOW = timedelta(hours=24)
FINAL_STATUSES = ("COMPLETED", "FAILED", "DEFERRED", "SKIPPED")
NO_SOURCE = "none"
# Staleness buckets, by age of ``lastDataRefresh``: (label, lower age bound in days).
STALENESS = (("<1d", 0), ("1-7d", 1), ("7-30d", 7), (">30d", 30))
NEVER = "never"
# Below every bucket boundary: where a missing or null ``lastDataRefresh`` is grouped (``never``).
_EARLIEST = datetime(1900, 1, 1)
_MISSING = datetime(1800, 1, 1)
_LATEST = datetime(9999, 1, 1)
# A foreign producer could write any ``dlq-reason``; label values stay few and short.
MAX_REASONS, MAX_REASON_CHARS, OTHER_REASON = 30, 60, "other"


def _now() -> datetime:
    """Naive UTC, see the module docstring."""
    return datetime.now(UTC).replace(tzinfo=None)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


class RefreshLogSources:
    """``DataRefreshLog``: outcomes of the last 24 h, and deferrals not yet retried."""

    def __init__(self, mongo: KeptClient[Any], database: str, timeout: float) -> None:
        self.mongo, self.database, self.timeout = mongo, database, timeout

    def outcomes(self) -> Families:
        since = _now() - OUTCOME_WINDOW
        pipeline = [
            {"$match": {"completedAt": {"$gte": since}}},
            {"$group": {"_id": {"status": "$status", "source": "$source"}, "count": {"$sum": 1}}},
        ]
        rows = self.mongo.use(
            lambda c: list(c[self.database][REFRESH_LOG].aggregate(pipeline)), self.timeout
        )
        counts: Counter[tuple[str, str]] = Counter(
            {("COMPLETED", "graph"): 0, ("COMPLETED", "scrape"): 0}
            | {(status, NO_SOURCE): 0 for status in FINAL_STATUSES[1:]}
        )
        for row in rows:
            key = row["_id"]
            counts[(str(key.get("status")), str(key.get("source") or NO_SOURCE))] += row["count"]
        family = _gauge(
            "refreshes_last_24h",
            "Refresh runs that ended in the last 24 hours, by DataRefreshLog status and source",
            ["status", "source"],
        )
        for (status, source), count in sorted(counts.items()):
            family.add_metric([status, source], count)
        return [family]

    def deferred(self) -> Families:
        waiting = self.mongo.use(
            lambda c: c[self.database][REFRESH_LOG].count_documents(
                {"status": DEFERRED, "retriedBy": {"$exists": False}}
            ),
            self.timeout,
        )
        family = _gauge("deferred_refreshes", "Deferred refreshes not yet retried")
        family.add_metric([], waiting)
        return [family]


class AccountSources:
    """``Account`` (platform INSTAGRAM, not gone) by age of its last refresh: one ``$bucket``."""

    def __init__(
        self, mongo: KeptClient[Any], database: str, freshness_days: int, timeout: float
    ) -> None:
        self.mongo, self.database, self.timeout = mongo, database, timeout
        self.freshness_days = freshness_days

    def staleness(self) -> Families:
        # Milliseconds only: the bucket ids come back as stored dates, which keep no more.
        now = _now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        buckets = self._buckets(now)
        pipeline = [
            {"$match": {"platform": PLATFORM, "instagramData.isGone": {"$ne": True}}},
            {
                "$bucket": {
                    # A missing date falls below the first boundary, into ``default``.
                    "groupBy": {"$ifNull": ["$lastDataRefresh", _MISSING]},
                    "boundaries": [*buckets, _LATEST],
                    "default": NEVER,
                    "output": {"count": {"$sum": 1}, "oldest": {"$min": "$lastDataRefresh"}},
                }
            },
        ]
        rows = self.mongo.use(
            lambda c: list(c[self.database]["Account"].aggregate(pipeline)), self.timeout
        )
        return self._families(rows, now, buckets)

    def recycled(self) -> Families:
        """Accounts whose handle answered as another Instagram user (README "Data we write"):
        each needs an operator, because no refresh writes them until one decides."""
        flagged = self.mongo.use(
            lambda c: AccountStore(c[self.database]).count_recycled(PLATFORM), self.timeout
        )
        family = _gauge(
            "handle_recycled_accounts",
            "Accounts flagged instagramData.handleRecycled: their handle now answers as "
            "another Instagram user, so refreshes write nothing",
        )
        family.add_metric([], flagged)
        return [family]

    def _buckets(self, now: datetime) -> dict[datetime, tuple[str, bool]]:
        """Each bucket's lower boundary (oldest first) -> (staleness label, within the target).

        The boundaries are the staleness edges plus the freshness target's edge, so one query
        answers both; a bucket [now - a, now - b) holds ages in (b, a] days."""
        ages = sorted({days for _, days in STALENESS} | {self.freshness_days}, reverse=True)
        spans = [(math.inf, ages[0]), *itertools.pairwise(ages)]
        lowers = [_EARLIEST, *(now - timedelta(days=age) for age in ages[:-1])]
        return {
            lower: (_label(younger), older <= self.freshness_days)
            for lower, (older, younger) in zip(lowers, spans, strict=True)
        }

    def _families(
        self, rows: list[dict[str, Any]], now: datetime, buckets: dict[datetime, tuple[str, bool]]
    ) -> Families:
        by_label = Counter({label: 0 for label, _ in STALENESS} | {NEVER: 0})
        fresh = total = 0
        oldest: datetime | None = None
        for row in rows:
            total += row["count"]
            if row["_id"] == NEVER:
                by_label[NEVER] += row["count"]
                continue
            label, within_target = buckets[row["_id"].replace(tzinfo=None)]
            by_label[label] += row["count"]
            fresh += row["count"] if within_target else 0
            if isinstance(row.get("oldest"), datetime):
                seen = row["oldest"].replace(tzinfo=None)
                oldest = seen if oldest is None else min(oldest, seen)
        accounts = _gauge(
            "accounts", "Instagram accounts by time since their last refresh", ["staleness"]
        )
        for label in [*(label for label, _ in STALENESS), NEVER]:
            accounts.add_metric([label], by_label[label])
        share = _gauge(
            "accounts_fresh_ratio",
            "Share of Instagram accounts refreshed within the freshness target (never-refreshed "
            "accounts count as stale; NaN when there are none)",
        )
        share.add_metric([], fresh / total if total else math.nan)
        target = _gauge("freshness_target_seconds", "The freshness target the ratio is against")
        target.add_metric([], self.freshness_days * 86400)
        families: Families = [accounts, share, target]
        if oldest is not None:
            age = _gauge(
                "oldest_refresh_age_seconds",
                "Seconds since the least recently refreshed account's last refresh",
            )
            age.add_metric([], max(0.0, (now - oldest).total_seconds()))
            families.append(age)
        return families


def _label(younger_than: float) -> str:
    """The named staleness bucket holding ages just above ``younger_than`` days."""
    return [name for name, days in STALENESS if younger_than >= days][-1]


class RedisSources:
    """The fleet-wide budgets and the fetcher's per-credential Graph switch, over the sidecar's
    Redis client. Credentials are named by fingerprint only (``graph:<fingerprint>`` budgets)."""

    def __init__(
        self,
        redis: KeptClient[Any],
        budgets: Callable[[], dict[str, int]],
        fingerprints: Callable[[], list[str]],
        timeout: float,
    ) -> None:
        self.redis, self.timeout = redis, timeout
        self.limits, self.fingerprints = budgets, fingerprints

    def budgets(self) -> Families:
        """One status script call per budget (the same ``HourlyBudget`` the fetcher charges)."""
        limits = self.limits()

        def read(client: Any) -> list[BudgetStatus]:
            return [HourlyBudget(client, name, cap).status() for name, cap in limits.items()]

        statuses = self.redis.use(read, self.timeout)
        used = _gauge("budget_used", "Calls admitted in the last hour", ["budget"])
        limit = _gauge("budget_limit", "Hourly limit of calls", ["budget"])
        blocked = _gauge(
            "budget_blocked_seconds",
            "Seconds the budget still admits nothing (a rate limit Instagram reported)",
            ["budget"],
        )
        for status in statuses:
            used.add_metric([status.name], status.used)
            limit.add_metric([status.name], status.limit)
            blocked.add_metric([status.name], status.blocked_for_seconds)
        return [used, limit, blocked]

    def eviction_policy(self) -> Families:
        """Whether the budgets' Redis may evict them: 1 noeviction, 0 another policy, -1 unknown
        (the server refuses CONFIG GET, as managed services may)."""
        policy = self.redis.use(maxmemory_policy, self.timeout)
        noeviction = _gauge(
            "budget_redis_noeviction",
            "1 when the budgets' Redis has maxmemory-policy noeviction, 0 when it may evict "
            "budget counters, -1 when the server does not say",
        )
        safe, _ = policy_verdict(policy)
        noeviction.add_metric([], -1 if safe is None else int(safe))
        return [noeviction]

    def graph(self) -> Families:
        """Per credential, 1 unless the fetcher switched it off; ``graph_enabled`` is 1 while
        any credential is on. Nothing without a credential (the fetcher then only scrapes)."""
        fingerprints = self.fingerprints()
        if not fingerprints:
            return []
        disabled = self.redis.use(
            lambda c: {f: FetchMemory(c).graph_disabled(f) for f in fingerprints}, self.timeout
        )
        each = _gauge(
            "graph_credential_enabled",
            "1 when Graph API calls are enabled for the credential (by token fingerprint), else 0",
            ["credential"],
        )
        for fingerprint in fingerprints:
            each.add_metric([fingerprint], 0 if disabled[fingerprint] else 1)
        family = _gauge(
            "graph_enabled", "1 when Graph API calls are enabled for at least one credential"
        )
        family.add_metric([], 1 if any(v is None for v in disabled.values()) else 0)
        return [family, each]


class ConsumerLag:
    """Per partition of the refresh topic: its latest offset minus the sensor's saved cursor.

    The latest offset is the broker's high watermark; the embedded broker's lags behind what was
    written (``STACK.md``), so there lag reads low. A partition the cursor has not read yet lags
    from its earliest offset, as that is where the sensor will start.
    """

    def __init__(
        self,
        admin: KeptClient[Any],
        view: DagsterInstanceView,
        sensor: str,
        topic: str,
        timeout: float,
    ) -> None:
        self.admin, self.view, self.sensor = admin, view, sensor
        self.topic, self.timeout = topic, timeout

    def __call__(self) -> Families:
        saved = self.view.sensor_cursor(self.sensor, self.timeout)
        cursor, _ = TopicCursor.parse(saved, self.topic)
        latest, earliest = self.admin.use(self._offsets, self.timeout)
        lag = _gauge(
            "consumer_lag",
            "Messages of the refresh topic not yet read by the sensor (latest offset minus "
            "the saved cursor)",
            ["topic", "partition"],
        )
        for partition in sorted(latest):
            start = cursor.offsets.get(partition, earliest[partition])
            lag.add_metric([self.topic, str(partition)], max(0, latest[partition] - start))
        return [lag]

    def _offsets(self, admin: Any) -> tuple[dict[int, int], dict[int, int]]:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        metadata = admin.list_topics(self.topic, timeout=self.timeout)
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            raise RuntimeError(f"topic {self.topic!r} is not readable")
        partitions = [TopicPartition(self.topic, p) for p in sorted(found.partitions)]

        def listed(spec: Any) -> dict[int, int]:
            futures = admin.list_offsets(
                {tp: spec for tp in partitions}, request_timeout=self.timeout
            )
            return {tp.partition: f.result(self.timeout).offset for tp, f in futures.items()}

        return listed(OffsetSpec.latest()), listed(OffsetSpec.earliest())


class DeadLetterCounts:
    """Dead letters by ``dlq-reason``, read incrementally: a kept reader continues from its own
    in-memory cursor, so each scrape reads only what arrived since (at most ``limits``), and the
    sidecar's first scrapes count the topic from its earliest offset."""

    LIMITS = PollLimits(
        max_messages=5000,
        max_seconds=1.5,
        max_bytes=16 * 1024 * 1024,
        idle_seconds=0.2,
        first_message_seconds=0.5,
    )

    def __init__(self, reader: KeptClient[TopicReader], topic: str, timeout: float) -> None:
        self.reader, self.topic, self.timeout = reader, topic, timeout
        self.cursor = TopicCursor(topic=topic)
        self.counts: Counter[str] = Counter()

    def __call__(self) -> Families:
        polled = self.reader.use(lambda r: r.poll(self.cursor, self.LIMITS), self.timeout)
        if polled.cursor.topic_id is None:
            raise RuntimeError(f"dead-letter topic {self.topic!r} does not exist")
        if self.cursor.topic_id is not None and polled.cursor.epoch != self.cursor.epoch:
            self.counts.clear()  # recreated or reset under us: it is being read again
        self.cursor = polled.cursor
        for message in polled.messages:
            self.counts[_reason(DeadLetterRecord.from_message(message).reason, self.counts)] += 1
        family = CounterMetricFamily(
            f"{PREFIX}_dead_letters",
            "Dead letters on the dead-letter topic by reason (counted since the sidecar started, "
            "from the topic's earliest offset)",
            labels=["reason"],
        )
        for reason, count in sorted(self.counts.items()):
            family.add_metric([reason], count)
        return [family]


def _reason(reason: str, seen: Counter[str]) -> str:
    reason = reason[:MAX_REASON_CHARS]
    return reason if reason in seen or len(seen) < MAX_REASONS else OTHER_REASON
