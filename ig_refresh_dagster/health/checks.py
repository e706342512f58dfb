"""The dependency checks behind ``/ready``, and the runner that bounds them all by one timeout.

Each check returns ``(ok, detail)``; client libraries are imported inside the checks so that
importing this module stays cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from ig_refresh_dagster.health.redact import redact_uri

NOT_CONFIGURED = "not configured"

Check = Callable[[], tuple[bool, str]]


class CheckResult(BaseModel):
    ok: bool
    detail: str
    latency_ms: float


def run_checks(checks: Mapping[str, Check], timeout: float) -> dict[str, CheckResult]:
    """Run every check at once in daemon threads and wait at most ``timeout`` for all of them.

    A check still running at the deadline is reported as timed out and left to finish on its
    own (each client has its own timeout too); daemon threads never block process exit.
    """
    results: dict[str, CheckResult] = {}

    def run(name: str, check: Check) -> None:
        started = time.perf_counter()
        try:
            ok, detail = check()
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results[name] = CheckResult(ok=ok, detail=detail, latency_ms=_ms_since(started))

    threads = {
        name: threading.Thread(target=run, args=(name, check), name=f"ready-{name}", daemon=True)
        for name, check in checks.items()
    }
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name) or _timed_out(timeout) for name in checks}


def _timed_out(timeout: float) -> CheckResult:
    return CheckResult(
        ok=False, detail=f"timed out after {timeout:g}s", latency_ms=round(timeout * 1000, 1)
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def check_kafka(bootstrap_servers: str | None, topic: str, timeout: float) -> tuple[bool, str]:
    """Metadata from the brokers; a missing topic is reported but not fatal (the sensor waits)."""
    if not bootstrap_servers:
        return False, NOT_CONFIGURED
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap_servers,
            "socket.timeout.ms": max(1000, int(timeout * 1000)),
            # librdkafka would print every refused connection to stderr; route it to logging.
            "logger": logging.getLogger("ig_refresh_dagster.health.kafka"),
        }
    )
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return False, f"{bootstrap_servers} unreachable: {exc.args[0].str()}"
    brokers = f"{len(metadata.brokers)} broker(s) at {bootstrap_servers}"
    found = metadata.topics.get(topic)
    if found is None:
        return True, f"{brokers}; topic {topic!r} does not exist yet"
    if found.error is not None:
        return True, f"{brokers}; topic {topic!r}: {found.error.str()}"
    return True, f"{brokers}; topic {topic!r} exists with {len(found.partitions)} partition(s)"


def check_mongodb(uri: str | None, database: str, timeout: float) -> tuple[bool, str]:
    """``ping`` on MongoDB; the embedded litemongo store has no server, so list its collections."""
    if not uri:
        return False, NOT_CONFIGURED
    from ig_refresh_dagster.stores.mongo import open_client

    client = open_client(uri, timeout_ms=max(1, int(timeout * 1000)))
    try:
        if urlsplit(uri).scheme in ("mongodb", "mongodb+srv"):
            client.admin.command("ping")
            return True, f"ping ok ({redact_uri(uri)})"
        names = client[database].list_collection_names()
        return True, f"{len(names)} collection(s) in {database!r} ({redact_uri(uri)})"
    finally:
        client.close()


def _redis_client(url: str, timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def check_redis(url: str | None, timeout: float) -> tuple[bool, str]:
    if not url:
        return False, NOT_CONFIGURED
    import redis

    client = _redis_client(url, timeout)
    try:
        client.ping()
        return True, f"PONG from {redact_uri(url)}"
    except redis.RedisError as exc:
        return False, f"{redact_uri(url)} unreachable: {exc}"
    finally:
        client.close()


def check_instagram_graph(
    token: str | None, redis_url: str | None, timeout: float
) -> tuple[bool, str]:
    """Whether the fetcher has switched Graph off for this token (it then only scrapes)."""
    if not token:
        return True, NOT_CONFIGURED
    if not redis_url:
        return False, "unknown: REDIS_URL not configured"
    import redis

    from ig_refresh_dagster.instagram.graph import token_fingerprint
    from ig_refresh_dagster.stores.fetch_memory import FetchMemory

    client = _redis_client(redis_url, timeout)
    try:
        client.ping()  # FetchMemory reads "nothing remembered" when Redis is down: not "enabled"
        reason = FetchMemory(client).graph_disabled_reason(token_fingerprint(token))
    except redis.RedisError as exc:
        return False, f"unknown: Redis unreachable ({exc})"
    finally:
        client.close()
    if reason:
        return False, f"disabled: {reason}"
    return True, "enabled"
