"""Where the sidecar looks: the pipeline's own settings table, so it checks the same Kafka,
MongoDB and Redis that the runs use, with the same defaults."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from ig_refresh_dagster import settings

# Sidecar field -> the setting it comes from.
FROM_SETTINGS = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "refresh_topic": "INSTAGRAM_REFRESH_TOPIC",
    "mongodb_uri": "MONGODB_URI",
    "mongodb_database": "MONGODB_DATABASE",
    "redis_url": "REDIS_URL",
    "instagram_access_token": "INSTAGRAM_ACCESS_TOKEN",
    "port": "PORT",
    "host": "HOST",
}


def _default(field: str) -> Any:
    return Field(default=settings.default(FROM_SETTINGS[field]))


class HealthConfig(BaseModel):
    kafka_bootstrap_servers: str | None = _default("kafka_bootstrap_servers")
    refresh_topic: str = _default("refresh_topic")
    mongodb_uri: str | None = _default("mongodb_uri")
    mongodb_database: str = _default("mongodb_database")
    redis_url: str | None = _default("redis_url")
    instagram_access_token: SecretStr | None = _default("instagram_access_token")
    port: int = _default("port")
    host: str = _default("host")
    dagster_home: str | None = None
    check_timeout_seconds: float = 3.0
    daemon_staleness_seconds: float = 60.0

    @classmethod
    def from_env(cls, **overrides: Any) -> HealthConfig:
        """Environment first, the settings table's defaults second; ``overrides`` (CLI flags)
        win."""
        values: dict[str, Any] = {
            field: settings.value(name) for field, name in FROM_SETTINGS.items()
        }
        values["dagster_home"] = os.environ.get("DAGSTER_HOME") or None
        values.update(overrides)
        return cls(**values)
