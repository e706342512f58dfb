"""Where every setting comes from: one table, read in one place.

A variable that is set is passed to Dagster as ``EnvVar`` (the UI then shows the variable's
name, never its value — tokens included); an unset one falls back to its default here.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import EnvVar

from ig_refresh_dagster.stores.mongo import litemongo_uri

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The project's local data folder: embedded Mongo files, Dagster home, logs."""
    return Path(os.environ.get("IG_REFRESH_DATA_DIR", PROJECT_ROOT / ".data")).resolve()


# Defaults of the settings whose variable is unset (None: no default). What each one means is
# documented once, in the README's configuration table.
DEFAULTS: dict[str, str | int | None] = {
    "KAFKA_BOOTSTRAP_SERVERS": None,
    "INSTAGRAM_REFRESH_TOPIC": "data-refresh-instagram",
    "INSTAGRAM_REFRESH_DLQ_TOPIC": "data-refresh-instagram.dlq",
    "MONGODB_URI": None,  # the embedded store in data_dir()/mongo, see env_or_default
    "MONGODB_DATABASE": "ratecreator",
    "REDIS_URL": None,
    "INSTAGRAM_ACCESS_TOKEN": None,
    "INSTAGRAM_BUSINESS_ACCOUNT_ID": None,
    "INSTAGRAM_GRAPH_API_URL": "https://graph.facebook.com/v21.0",
    "INSTAGRAM_WEB_URL": "https://www.instagram.com",
    "INSTAGRAM_HOURLY_BUDGET": 200,
    "INSTAGRAM_SCRAPE_HOURLY_BUDGET": 60,
    "PORT": 3053,
}


def env_or_default(name: str) -> EnvVar | str | None:
    if os.environ.get(name):
        return EnvVar(name)
    if name == "MONGODB_URI":
        return litemongo_uri(data_dir() / "mongo")
    default = DEFAULTS[name]
    return None if default is None else str(default)


def env_int_or_default(name: str) -> EnvVar | int:
    if os.environ.get(name):
        return EnvVar.int(name)
    return int(DEFAULTS[name])  # type: ignore[arg-type]


def resolved(name: str) -> str | None:
    """The plain value, for code outside Dagster (CLI, health sidecar)."""
    value = env_or_default(name)
    return value.get_value() if isinstance(value, EnvVar) else value
