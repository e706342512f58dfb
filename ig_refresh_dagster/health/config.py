"""Where the sidecar looks: the pipeline's own settings table, so it checks the same Kafka
(with the same credentials), MongoDB and Redis that the runs use, with the same defaults."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ig_refresh_dagster import redaction, settings
from ig_refresh_dagster.instagram.credentials import GraphCredential, credential_pool
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.stores.budget import (
    BUDGET_LIMIT_SETTINGS,
    GRAPH_BUDGET,
    SCRAPE_BUDGET,
    graph_budget_names,
)

# Sidecar field -> the setting it comes from (Kafka's connection comes whole from KafkaConnection).
FROM_SETTINGS = {
    "refresh_topic": "INSTAGRAM_REFRESH_TOPIC",
    "dlq_topic": "INSTAGRAM_REFRESH_DLQ_TOPIC",
    "mongodb_uri": "MONGODB_URI",
    "mongodb_database": "MONGODB_DATABASE",
    "redis_url": "REDIS_URL",
    "budget_redis_url": "INSTAGRAM_BUDGET_REDIS_URL",
    "freshness_days": "INSTAGRAM_FRESHNESS_DAYS",
    "instagram_access_token": "INSTAGRAM_ACCESS_TOKEN",
    "instagram_business_account_id": "INSTAGRAM_BUSINESS_ACCOUNT_ID",
    "instagram_graph_credentials": "INSTAGRAM_GRAPH_CREDENTIALS",
    "port": "PORT",
    "host": "HOST",
}
REFRESH_SENSOR = "instagram_refresh_sensor"


def _budget_limits(read: Any) -> dict[str, int]:
    return {name: int(read(setting)) for name, setting in BUDGET_LIMIT_SETTINGS.items()}


def _plain(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _default(field: str) -> Any:
    return Field(default=settings.default(FROM_SETTINGS[field]))


class HealthConfig(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)

    kafka: KafkaConnection | None = None
    refresh_topic: str = _default("refresh_topic")
    dlq_topic: str = _default("dlq_topic")
    mongodb_uri: str | None = _default("mongodb_uri")
    mongodb_database: str = _default("mongodb_database")
    redis_url: str | None = _default("redis_url")
    # The budgets may live in their own Redis (defaults to REDIS_URL).
    budget_redis_url: str | None = _default("budget_redis_url")
    instagram_access_token: SecretStr | None = _default("instagram_access_token")
    instagram_business_account_id: str | None = _default("instagram_business_account_id")
    instagram_graph_credentials: SecretStr | None = _default("instagram_graph_credentials")
    port: int = _default("port")
    host: str = _default("host")
    dagster_home: str | None = None
    check_timeout_seconds: float = 3.0
    # A connection must deliver its request head within this, or it is closed (idle sockets).
    request_timeout_seconds: float = 10.0
    # Connections held open at once (lowered to what the open-file limit allows); more are
    # closed on arrival.
    max_connections: int = 4096
    # A probe flood is answered from one result per period (single-flight, then cached).
    cache_seconds: float = 2.0
    daemon_staleness_seconds: float = 60.0
    sensor_name: str = REFRESH_SENSOR
    sensor_failed_ticks: int = 3
    # 36 ticks at the sensor's 5 s interval; a tick submitting 500 runs took ~90 s here.
    sensor_stale_seconds: float = 180.0
    # ``/metrics`` queries each source at most once per period, however often it is scraped.
    metrics_cache_seconds: float = 15.0
    budget_limits: dict[str, int] = Field(default_factory=lambda: _budget_limits(settings.default))
    freshness_days: int = _default("freshness_days")

    @classmethod
    def from_env(cls, **overrides: Any) -> HealthConfig:
        """Environment first, the settings table's defaults second; ``overrides`` (CLI flags)
        win."""
        values: dict[str, Any] = {
            field: settings.value(name) for field, name in FROM_SETTINGS.items()
        }
        values["kafka"] = KafkaConnection.from_settings()
        values["dagster_home"] = os.environ.get("DAGSTER_HOME") or None
        values["budget_limits"] = _budget_limits(settings.int_value)
        values.update(overrides)
        return cls(**values)

    def graph_credentials(self) -> list[GraphCredential]:
        """The pipeline's credential pool (the same one, in the same order); a malformed list
        raises CredentialsInvalid, which names the variable and never a value."""

        return credential_pool(
            _plain(self.instagram_access_token),
            self.instagram_business_account_id,
            _plain(self.instagram_graph_credentials),
        )

    def graph_configured(self) -> bool:
        """Whether any credential is configured (readable or not: the Graph check says which)."""
        pair = _plain(self.instagram_access_token) and self.instagram_business_account_id
        return bool(pair or _plain(self.instagram_graph_credentials))

    def graph_fingerprints(self) -> list[str]:
        return [credential.fingerprint for credential in self.graph_credentials()]

    def budgets(self) -> dict[str, int]:
        """Every fleet-wide budget the pipeline charges, by name, with its hourly limit."""
        graph = {name: self.budget_limits[GRAPH_BUDGET] for name in self.graph_names()}
        return graph | {SCRAPE_BUDGET: self.budget_limits[SCRAPE_BUDGET]}

    def graph_names(self) -> list[str]:
        return graph_budget_names(self.graph_fingerprints())

    def secrets(self) -> list[str]:
        """Values that must never be shown, wherever they turn up (an error echoing a token, a
        URL parser quoting part of a password): every credential's token, the Kafka password,
        each store URL's password, and the environment's other secrets (``redaction``)."""
        candidates = [
            _plain(self.instagram_access_token),
            _plain(self.instagram_graph_credentials),
            _plain(self.kafka.sasl_password) if self.kafka else None,
            self.mongodb_uri,
            self.redis_url,
            self.budget_redis_url,
        ]
        values = [atom for c in candidates if c for atom in redaction.secret_atoms(c)]
        with contextlib.suppress(ValueError):  # unreadable: the probe reports why
            values += [c.access_token.get_secret_value() for c in self.graph_credentials()]
        values += redaction.setting_secrets()
        return [v for v in dict.fromkeys(values) if v]
