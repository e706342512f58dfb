"""Every setting the pipeline reads from its environment: one table, one default each.

Dagster-free on purpose: ``definitions.py`` turns a set variable into an ``EnvVar`` (so the UI
shows the variable's name, never its value) and an unset one into the default below; the health
sidecar and the CLI read plain values through ``value``. What each setting means is documented
once, in the configuration table (docs/configuration.md) (a test keeps the two in step).
"""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, ConfigDict


class Setting(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    default: str | int | None = None
    secret: bool = False
    # Another setting whose value this one takes when it is not set itself.
    fallback: str | None = None
    # A secret holding a document (a JSON list), checked per entry rather than as one line.
    structured: bool = False


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting(name="KAFKA_BOOTSTRAP_SERVERS"),
        Setting(name="KAFKA_FETCH_WAIT_MAX_MS"),
        Setting(name="KAFKA_SECURITY_PROTOCOL"),
        Setting(name="KAFKA_SASL_MECHANISM"),
        Setting(name="KAFKA_SASL_USERNAME"),
        Setting(name="KAFKA_SASL_PASSWORD", secret=True),
        Setting(name="KAFKA_SSL_CA_LOCATION"),
        Setting(name="INSTAGRAM_REFRESH_TOPIC", default="data-refresh-instagram"),
        Setting(name="INSTAGRAM_REFRESH_DLQ_TOPIC", default="data-refresh-instagram.dlq"),
        Setting(name="INSTAGRAM_REFRESH_START_FROM", default="committed"),
        Setting(name="MONGODB_URI", secret=True),
        Setting(name="MONGODB_DATABASE", default="ratecreator"),
        Setting(name="REDIS_URL", secret=True),
        Setting(name="INSTAGRAM_BUDGET_REDIS_URL", secret=True, fallback="REDIS_URL"),
        Setting(name="INSTAGRAM_ACCESS_TOKEN", secret=True),
        Setting(name="INSTAGRAM_BUSINESS_ACCOUNT_ID"),
        Setting(name="INSTAGRAM_GRAPH_CREDENTIALS", secret=True, structured=True),
        Setting(name="INSTAGRAM_GRAPH_API_URL", default="https://graph.facebook.com/v25.0"),
        Setting(name="INSTAGRAM_WEB_URL", default="https://www.instagram.com"),
        Setting(name="INSTAGRAM_HOURLY_BUDGET", default=200),
        Setting(name="INSTAGRAM_SCRAPE_HOURLY_BUDGET", default=60),
        Setting(name="INSTAGRAM_BACKFILL_BUDGET_PERCENT", default=50),
        Setting(name="INSTAGRAM_FRESHNESS_DAYS", default=7),
        Setting(name="INSTAGRAM_MIN_REFRESH_INTERVAL_HOURS", default=6),
        Setting(name="HOST", default="127.0.0.1"),
        Setting(name="PORT", default=3053),
        Setting(name="RUN_RETENTION_DAYS", default=30),
        Setting(name="INSTAGRAM_MAX_ACCOUNT_PARTITIONS", default=15_000),
    ]
}


def is_set(name: str) -> bool:
    """Set and non-empty (an empty variable means "use the default", as in a Helm chart)."""
    _setting(name)
    return bool(os.environ.get(name))


def default(name: str) -> str | int | None:
    return _setting(name).default


def source(name: str) -> str:
    """The variable that supplies ``name``: itself when set, else (following fallbacks) the
    first one that is set, else the last in the chain. The one place fallbacks are resolved."""
    setting = _setting(name)
    for _ in range(len(SETTINGS)):  # a chain longer than the table would be a cycle
        if is_set(setting.name) or setting.fallback is None:
            return setting.name
        setting = _setting(setting.fallback)
    raise ValueError(f"{name}'s fallbacks form a cycle in the settings table")


def value(name: str) -> str | None:
    """The environment's value (its own or its fallback's), else the default as text, else
    None."""
    supplier = source(name)
    if is_set(supplier):
        raw, setting = os.environ[supplier], _setting(supplier)
        if setting.structured:
            return raw.strip()
        return clean_secret(supplier, raw) if setting.secret else raw
    fallback = default(supplier)
    return None if fallback is None else str(fallback)


class SecretInvalid(ValueError):
    """A secret holds a character no header or URL can carry; the message names the variable,
    never the value."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_secret(variable: str, raw: str | None) -> str | None:
    """``raw`` without surrounding whitespace (a file-mounted secret ends with a newline); a
    control or non-ASCII character inside is a configuration error naming ``variable``."""
    if raw is None:
        return None
    raw = raw.strip()
    if _CONTROL.search(raw):
        raise SecretInvalid(f"{variable} contains a control character; it must be one line")
    if not raw.isascii():
        raise SecretInvalid(f"{variable} contains a non-ASCII character; it must be plain ASCII")
    return raw


def int_value(name: str) -> int:
    raw = value(name)
    if raw is None:
        raise ValueError(f"{name} has no value and no default")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw[:40]!r}") from None


def _setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise KeyError(f"{name} is not in the settings table (settings.py)") from None
