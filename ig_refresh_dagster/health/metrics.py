"""``GET /metrics``: Prometheus text over a cached snapshot of the pipeline's state.

Scraping must stay cheap whoever scrapes and however often: a custom collector answers from one
snapshot, taken at most once per ``metrics_cache_seconds`` (single-flight: concurrent scrapes
wait for the one refresh in flight), each source one query over the sidecar's kept clients (the
same ones ``/ready`` uses). A source that fails or times out is left out of that snapshot and
reported as ``ig_refresh_metrics_source_up{source=...} 0``; its error goes to the log, scrubbed
of secrets, never into a label.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ig_refresh_dagster.health.checks import run_bounded
from ig_refresh_dagster.health.clients import KeptClient
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.metric_sources import (
    PREFIX,
    AccountSources,
    ConsumerLag,
    DeadLetterCounts,
    Families,
    RedisSources,
    RefreshLogSources,
    Source,
)
from ig_refresh_dagster.health.probe import ReadinessProbe
from ig_refresh_dagster.health.redact import scrub
from ig_refresh_dagster.intake.topic_reader import TopicReader

log = logging.getLogger(__name__)

DLQ_READER_GROUP = "ig-refresh-health-dlq"


class SnapshotCollector(Collector):
    """Every source's families from the last snapshot, plus each source's up and duration."""

    def __init__(
        self,
        sources: Mapping[str, Source],
        cache_seconds: float,
        timeout: float,
        secrets: list[str],
    ) -> None:
        self.sources, self.cache_seconds, self.timeout = sources, cache_seconds, timeout
        self._secrets = secrets
        self._lock = threading.Lock()
        self._families: Families = []
        self._taken_at: float | None = None
        self._failing: set[str] = set()
        self.snapshots = 0  # how many snapshots were taken (for tests and the log)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if self._taken_at is None or time.monotonic() - self._taken_at >= self.cache_seconds:
                self._families = self._take()
                self._taken_at = time.monotonic()
                self.snapshots += 1
            families, taken_at = self._families, self._taken_at
        age = GaugeMetricFamily(
            f"{PREFIX}_metrics_snapshot_age_seconds", "Seconds since these values were read"
        )
        age.add_metric([], time.monotonic() - taken_at)
        return [*families, age]

    def _take(self) -> Families:
        outcomes = run_bounded(self.sources, self.timeout)
        up = GaugeMetricFamily(
            f"{PREFIX}_metrics_source_up",
            "1 when the source answered for this snapshot, 0 when it failed or timed out",
            labels=["source"],
        )
        duration = GaugeMetricFamily(
            f"{PREFIX}_metrics_source_duration_seconds",
            "How long the source's query took for this snapshot",
            labels=["source"],
        )
        families: Families = []
        for name, outcome in outcomes.items():
            ok = outcome.value is not None
            up.add_metric([name], 1 if ok else 0)
            duration.add_metric([name], outcome.latency_ms / 1000)
            families += outcome.value or []
            self._log_change(name, outcome.error)
        return [*families, up, duration]

    def _log_change(self, name: str, error: str | None) -> None:
        """One line when a source starts failing or recovers, not one per snapshot."""
        if error is not None and name not in self._failing:
            log.warning("metrics source %s failed: %s", name, scrub(error, self._secrets))
            self._failing.add(name)
        elif error is None and name in self._failing:
            log.info("metrics source %s answers again", name)
            self._failing.discard(name)


class SidecarMetrics:
    """The sources the configuration allows, over the probe's kept clients, and their text."""

    def __init__(self, config: HealthConfig, probe: ReadinessProbe) -> None:
        self._dlq_reader: KeptClient[TopicReader] | None = None
        self.collector = SnapshotCollector(
            self._sources(config, probe),
            config.metrics_cache_seconds,
            config.check_timeout_seconds,
            config.secrets(),
        )
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self.collector)

    def _sources(self, c: HealthConfig, probe: ReadinessProbe) -> dict[str, Source]:
        inner = c.check_timeout_seconds * 0.8
        sources: dict[str, Source] = {}
        if probe.mongo is not None:
            log_sources = RefreshLogSources(probe.mongo, c.mongodb_database, inner)
            accounts = AccountSources(probe.mongo, c.mongodb_database, c.freshness_days, inner)
            sources |= {
                "refresh_outcomes": log_sources.outcomes,
                "deferred_refreshes": log_sources.deferred,
                "accounts": accounts.staleness,
                "handle_recycled": accounts.recycled,
            }
        if probe.redis is not None:
            redis_sources = RedisSources(probe.redis, c.budgets, c.graph_fingerprints, inner)
            budget_sources = RedisSources(
                probe.budget_redis or probe.redis, c.budgets, c.graph_fingerprints, inner
            )
            sources |= {
                "budgets": budget_sources.budgets,
                "budget_redis_policy": budget_sources.eviction_policy,
                "graph": redis_sources.graph,
            }
        if probe.kafka_admin is not None and c.kafka is not None:
            connection = c.kafka
            sources["consumer_lag"] = ConsumerLag(
                probe.kafka_admin, probe.view, c.sensor_name, c.refresh_topic, inner
            )
            self._dlq_reader = KeptClient(
                "dead-letter reader",
                lambda: TopicReader(connection, c.dlq_topic, DLQ_READER_GROUP),
                lambda reader: reader.close(),
            )
            # Reading is bounded by the reader's own limits, which may exceed ``inner``.
            sources["dead_letters"] = DeadLetterCounts(
                self._dlq_reader, c.dlq_topic, c.check_timeout_seconds
            )
        return sources

    def render(self) -> bytes:
        return generate_latest(self._registry)

    def close(self) -> None:
        if self._dlq_reader is not None:
            self._dlq_reader.close()
