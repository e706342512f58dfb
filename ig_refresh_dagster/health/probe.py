"""The ``/ready`` answer: every check at once, each bounded, results scrubbed of secrets.

Single-flight and cached: concurrent probes wait for the one evaluation in flight and share its
answer, which is then served for ``cache_seconds``. With the kept clients (``clients.py``) a
flood of probes costs at most one check per dependency per period and opens no connection.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from http import HTTPStatus
from typing import Any

from ig_refresh_dagster.health.checks import (
    NOT_CONFIGURED,
    BudgetRedisCheck,
    Check,
    CheckResult,
    GraphCheck,
    KafkaCheck,
    MongoCheck,
    RedisCheck,
    redis_client,
    run_checks,
)
from ig_refresh_dagster.health.clients import KeptClient
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.daemon import DagsterInstanceView
from ig_refresh_dagster.health.dagster_checks import DaemonCheck, SensorCheck
from ig_refresh_dagster.health.redact import scrub
from ig_refresh_dagster.stores.budget import GRAPH_BUDGET

log = logging.getLogger(__name__)

SERVICE = "instagram-refresh"
# Dependencies without which the pipeline cannot make progress; instagram_graph is informational
# because the fetcher falls back to scraping when Graph is unavailable.
CRITICAL_CHECKS = (
    "kafka",
    "mongodb",
    "redis",
    "budget_redis",
    "dagster_daemon",
    "refresh_sensor",
)


def _fixed(ok: bool, detail: str) -> Check:
    return lambda: (ok, detail)


class ReadinessProbe:
    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._secrets = config.secrets()
        self._lock = threading.Lock()
        self._answer: tuple[int, dict[str, Any]] | None = None
        self._answered_at = 0.0
        self._last_ok: dict[str, bool] = {}
        # The kept clients, shared with ``/metrics`` and the history page: one per dependency.
        self.mongo: KeptClient[Any] | None = None
        self.redis: KeptClient[Any] | None = None
        # The budgets' Redis: ``redis`` itself unless INSTAGRAM_BUDGET_REDIS_URL names another.
        self.budget_redis: KeptClient[Any] | None = None
        self.kafka_admin: KeptClient[Any] | None = None
        self.view = DagsterInstanceView(config.dagster_home)
        self._checks = self._build_checks()

    def _build_checks(self) -> dict[str, Check]:
        c = self.config
        # Client-side timeouts a little under the probe's, so a real error usually wins the race.
        inner = c.check_timeout_seconds * 0.8
        view = self.view
        checks: dict[str, Check] = {
            "kafka": _fixed(False, NOT_CONFIGURED),
            "mongodb": _fixed(False, NOT_CONFIGURED),
            "redis": _fixed(False, NOT_CONFIGURED),
            "budget_redis": _fixed(False, NOT_CONFIGURED),
            "dagster_daemon": DaemonCheck(view, c.daemon_staleness_seconds, inner),
            "refresh_sensor": SensorCheck(
                view, c.sensor_name, c.sensor_failed_ticks, c.sensor_stale_seconds, inner
            ),
            "instagram_graph": _fixed(True, NOT_CONFIGURED),
        }
        if c.kafka is not None:
            kafka = KafkaCheck(c.kafka, c.refresh_topic, c.dlq_topic, inner)
            checks["kafka"] = kafka
            self.kafka_admin = kafka.admin
        if c.mongodb_uri:
            mongo = MongoCheck(c.mongodb_uri, c.mongodb_database, inner)
            checks["mongodb"] = mongo
            self.mongo = mongo.client
        redis = redis_client(c.redis_url, inner) if c.redis_url else None
        if redis is not None:
            checks["redis"] = RedisCheck(c.redis_url or "", redis, inner)
            self.redis = self.budget_redis = redis
            separate = bool(c.budget_redis_url and c.budget_redis_url != c.redis_url)
            if separate:
                self.budget_redis = redis_client(c.budget_redis_url or "", inner)
            checks["budget_redis"] = BudgetRedisCheck(
                c.budget_redis_url or c.redis_url or "", not separate, self.budget_redis, inner
            )
        if c.graph_configured():
            checks["instagram_graph"] = (
                GraphCheck(
                    c.graph_fingerprints,
                    c.budget_limits[GRAPH_BUDGET],
                    redis,
                    self.budget_redis or redis,
                    inner,
                )
                if redis is not None
                else _fixed(False, "unknown: REDIS_URL not configured")
            )
        return checks

    def run(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 503 unless every critical dependency is ok."""
        with self._lock:
            if self._answer is None or time.monotonic() - self._answered_at >= (
                self.config.cache_seconds
            ):
                self._answer = self._evaluate()
                self._answered_at = time.monotonic()
            status, body = self._answer
            age = time.monotonic() - self._answered_at
        return status, {**body, "age_seconds": round(age, 3)}

    def _evaluate(self) -> tuple[int, dict[str, Any]]:
        checked_at = datetime.datetime.now(datetime.UTC)
        results = run_checks(self._checks, self.config.check_timeout_seconds)
        for result in results.values():
            result.detail = scrub(result.detail, self._secrets)
            if result.items is not None:
                result.items = {
                    scrub(key, self._secrets): scrub(text, self._secrets)
                    for key, text in result.items.items()
                }
        self._log_changes(results)
        ready = all(results[name].ok for name in CRITICAL_CHECKS)
        body = {
            "status": "ready" if ready else "not_ready",
            "service": SERVICE,
            "checked_at": checked_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "checks": {
                name: result.model_dump(exclude_none=True) for name, result in results.items()
            },
        }
        return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), body

    def _log_changes(self, results: dict[str, CheckResult]) -> None:
        """One line when a check turns bad or recovers, not one per probe."""
        for name, result in results.items():
            before = self._last_ok.get(name)
            if before is not False and not result.ok:
                log.warning("%s is not ok: %s", name, result.detail)
            elif before is False and result.ok:
                log.info("%s is ok again: %s", name, result.detail)
            self._last_ok[name] = result.ok

    def close(self) -> None:
        budget_redis = self.budget_redis if self.budget_redis is not self.redis else None
        for client in (self.view.instance, self.kafka_admin, self.mongo, self.redis, budget_redis):
            if client is not None:
                client.close()
