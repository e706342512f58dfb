"""Where every setting comes from: one table, read in one place.

A variable that is set is passed to Dagster as ``EnvVar`` (the UI then shows the variable's
name, never its value — tokens included); an unset one falls back to its default here.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import EnvVar
from pydantic import BaseModel

from ig_refresh_dagster.stores.mongo import litemongo_uri

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The project's local data folder: embedded Mongo files, Dagster home, logs."""
    return Path(os.environ.get("IG_REFRESH_DATA_DIR", PROJECT_ROOT / ".data")).resolve()


class Setting(BaseModel):
    name: str
    default: str | int | float | None
    description: str
    secret: bool = False


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting(
            name="KAFKA_BOOTSTRAP_SERVERS",
            default=None,
            description="Kafka brokers; unset: the embedded broker the README commands start",
        ),
        Setting(
            name="INSTAGRAM_REFRESH_TOPIC",
            default="data-refresh-instagram",
            description="topic of refresh events",
        ),
        Setting(
            name="INSTAGRAM_REFRESH_DLQ_TOPIC",
            default="data-refresh-instagram.dlq",
            description="dead-letter topic for rejected events",
        ),
        Setting(
            name="MONGODB_URI",
            default=None,
            description="mongodb:// or mongodb+srv:// URI, or litemongo:///ABS/DIR; "
            "unset: embedded store in .data/mongo",
        ),
        Setting(name="MONGODB_DATABASE", default="ratecreator", description="database name"),
        Setting(
            name="REDIS_URL",
            default=None,
            description="Redis for the cache and the budget; unset: the embedded valkey",
        ),
        Setting(
            name="INSTAGRAM_ACCESS_TOKEN",
            default=None,
            secret=True,
            description="Graph API token; unset: scraping only",
        ),
        Setting(
            name="INSTAGRAM_BUSINESS_ACCOUNT_ID",
            default=None,
            description="IG business account that runs Business Discovery",
        ),
        Setting(
            name="INSTAGRAM_GRAPH_API_URL",
            default="https://graph.facebook.com/v21.0",
            description="Graph API base URL including the version",
        ),
        Setting(
            name="INSTAGRAM_WEB_URL",
            default="https://www.instagram.com",
            description="public web base URL for the scraping fallback",
        ),
        Setting(
            name="INSTAGRAM_HOURLY_BUDGET",
            default=200,
            description="Graph calls per rolling hour, fleet-wide",
        ),
        Setting(
            name="INSTAGRAM_SCRAPE_HOURLY_BUDGET",
            default=60,
            description="public-page fetches per rolling hour, fleet-wide",
        ),
        Setting(name="PORT", default=3053, description="health sidecar port"),
    ]
}


def env_or_default(name: str) -> EnvVar | str | None:
    setting = SETTINGS[name]
    if os.environ.get(name):
        return EnvVar(name)
    if name == "MONGODB_URI":
        return litemongo_uri(data_dir() / "mongo")
    return None if setting.default is None else str(setting.default)


def env_int_or_default(name: str) -> EnvVar | int:
    if os.environ.get(name):
        return EnvVar.int(name)
    return int(SETTINGS[name].default)  # type: ignore[arg-type]


def resolved(name: str) -> str | None:
    """The plain value, for code outside Dagster (CLI, health sidecar)."""
    value = env_or_default(name)
    return value.get_value() if isinstance(value, EnvVar) else value
