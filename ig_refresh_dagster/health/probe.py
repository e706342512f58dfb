"""The ``/ready`` answer: every check at once, each bounded, results scrubbed of secrets."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from ig_refresh_dagster.health.checks import (
    Check,
    CheckResult,
    check_instagram_graph,
    check_kafka,
    check_mongodb,
    check_redis,
    run_checks,
)
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.daemon import DaemonHeartbeats
from ig_refresh_dagster.health.redact import scrub

log = logging.getLogger(__name__)

SERVICE = "instagram-refresh"
# Dependencies without which the pipeline cannot make progress; instagram_graph is informational
# because the fetcher falls back to scraping when Graph is unavailable.
CRITICAL_CHECKS = ("kafka", "mongodb", "redis", "dagster_daemon")


class ReadinessProbe:
    """Builds the ``/ready`` answer: every check concurrently, results scrubbed of secrets."""

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self._daemon = DaemonHeartbeats(config.dagster_home, config.daemon_staleness_seconds)
        self._last_graph_detail: str | None = None

    def _token(self) -> str | None:
        token = self.config.instagram_access_token
        return token.get_secret_value() if token is not None else None

    def checks(self) -> dict[str, Check]:
        c, timeout = self.config, self.config.check_timeout_seconds
        # Client-side timeouts a little under the probe's, so a real error usually wins the race.
        inner = timeout * 0.8
        return {
            "kafka": lambda: check_kafka(c.kafka_bootstrap_servers, c.refresh_topic, inner),
            "mongodb": lambda: check_mongodb(c.mongodb_uri, c.mongodb_database, inner),
            "redis": lambda: check_redis(c.redis_url, inner),
            "dagster_daemon": lambda: self._daemon.check(inner),
            "instagram_graph": lambda: check_instagram_graph(self._token(), c.redis_url, inner),
        }

    def run(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 503 unless every critical dependency is ok."""
        results = run_checks(self.checks(), self.config.check_timeout_seconds)
        secrets = [s for s in [self._token()] if s]
        for result in results.values():
            result.detail = scrub(result.detail, secrets)
        self._log_graph_change(results["instagram_graph"])
        ready = all(results[name].ok for name in CRITICAL_CHECKS)
        body = {
            "status": "ready" if ready else "not_ready",
            "service": SERVICE,
            "checks": {name: result.model_dump() for name, result in results.items()},
        }
        return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), body

    def _log_graph_change(self, graph: CheckResult) -> None:
        """Shout once when Graph is switched off (not on every probe), and say when it is back."""
        if graph.detail == self._last_graph_detail:
            return
        if graph.detail.startswith("disabled:"):
            log.warning("Instagram Graph API is OFF for the configured token: %s", graph.detail)
        elif self._last_graph_detail is not None:
            log.info("Instagram Graph API status: %s", graph.detail)
        self._last_graph_detail = graph.detail

    def close(self) -> None:
        self._daemon.close()
