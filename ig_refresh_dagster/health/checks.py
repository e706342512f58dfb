"""The dependency checks behind ``/ready``, and the runner that bounds them all by one timeout.

Each check returns ``(ok, detail)`` and keeps its client open between probes (``KeptClient``);
client libraries are imported inside so that importing this module stays cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel

from ig_refresh_dagster.health.clients import Busy, KeptClient
from ig_refresh_dagster.health.redact import redact_uri
from ig_refresh_dagster.intake.connection import KafkaConnection

log = logging.getLogger(__name__)

NOT_CONFIGURED = "not configured"
HEALTH_CLIENT_NAME = "ig-refresh-health"

# (ok, detail), or (ok, detail, items) for a check of several things: one line per item.
Check = Callable[[], tuple[bool, str] | tuple[bool, str, dict[str, str]]]
R = TypeVar("R")


class CheckResult(BaseModel):
    ok: bool
    detail: str
    latency_ms: float
    items: dict[str, str] | None = None


@dataclass
class Outcome(Generic[R]):
    """What one bounded task gave: its value, or why not (an exception, or the deadline)."""

    value: R | None
    error: str | None
    latency_ms: float


def run_bounded(tasks: Mapping[str, Callable[[], R]], timeout: float) -> dict[str, Outcome[R]]:
    """Run every task at once in daemon threads and wait at most ``timeout`` for all of them.

    A task still running at the deadline is reported as timed out and left to finish on its
    own (each client has its own timeout too); daemon threads never block process exit.
    """
    outcomes: dict[str, Outcome[R]] = {}

    def run(name: str, task: Callable[[], R]) -> None:
        started = time.perf_counter()
        try:
            outcomes[name] = Outcome(task(), None, _ms_since(started))
        except Exception as exc:
            outcomes[name] = Outcome(None, f"{type(exc).__name__}: {exc}", _ms_since(started))

    threads = {
        name: threading.Thread(target=run, args=(name, task), name=f"bounded-{name}", daemon=True)
        for name, task in tasks.items()
    }
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    late = Outcome[R](None, f"timed out after {timeout:g}s", round(timeout * 1000, 1))
    return {name: outcomes.get(name) or late for name in tasks}


def run_checks(checks: Mapping[str, Check], timeout: float) -> dict[str, CheckResult]:
    """Every check at once, bounded by ``timeout``; a raising or late check is not ok."""
    results = {}
    for name, outcome in run_bounded(checks, timeout).items():
        value = outcome.value if outcome.value is not None else (False, outcome.error or "")
        ok, detail, *items = value
        results[name] = CheckResult(
            ok=ok, detail=detail, latency_ms=outcome.latency_ms, items=items[0] if items else None
        )
    return results


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


class KafkaCheck:
    """Broker metadata through one kept admin client: the refresh topic and its dead-letter topic.

    A missing refresh topic is reported but not fatal (the sensor waits for it); a missing or
    broken dead-letter topic is fatal, because the first bad event would then fail every tick.
    """

    def __init__(
        self, connection: KafkaConnection, topic: str, dlq_topic: str, timeout: float
    ) -> None:
        from confluent_kafka.admin import AdminClient

        self.connection, self.timeout = connection, timeout
        self.topic, self.dlq_topic = topic, dlq_topic
        self._client_error: str | None = None
        config = connection.client_config(
            **{
                "client.id": HEALTH_CLIENT_NAME,
                "socket.timeout.ms": max(1000, int(timeout * 1000)),
                # The reason a request failed (a refused login, a TLS error) reaches only the
                # error callback; the answer carries it. Log lines would repeat it on every
                # reconnect, so only critical ones go to logging (never to stderr).
                "error_cb": self._on_client_error,
                "log_level": 2,
                "logger": logging.getLogger("ig_refresh_dagster.health.kafka"),
            }
        )
        self.admin = KeptClient("kafka", lambda: AdminClient(config), lambda _admin: None)

    def _on_client_error(self, error: Any) -> None:
        self._client_error = error.str()

    def _metadata(self, admin: Any) -> Any:
        try:
            return admin.list_topics(timeout=self.timeout)
        finally:
            admin.poll(0)  # serves the error callback

    def __call__(self) -> tuple[bool, str]:
        from confluent_kafka import KafkaException

        where = self.connection.describe()
        self._client_error = None
        try:
            metadata = self.admin.use(self._metadata, self.timeout)
        except KafkaException as exc:
            reason = f" ({self._client_error})" if self._client_error else ""
            return False, f"{where} unreachable: {exc.args[0].str()}{reason}"
        refresh_ok, refresh = _topic_state(metadata, self.topic, "topic")
        dlq_ok, dlq = _topic_state(metadata, self.dlq_topic, "dead-letter topic")
        detail = f"{len(metadata.brokers)} broker(s) at {where}; {refresh}; {dlq}"
        if refresh_ok is None:  # missing refresh topic: the sensor waits, nothing is lost
            refresh_ok = True
        return bool(refresh_ok and dlq_ok), detail


def _topic_state(metadata: Any, topic: str, label: str) -> tuple[bool | None, str]:
    """(ok, text); ok is None when the topic does not exist."""
    found = metadata.topics.get(topic)
    if found is None:
        return None, f"{label} {topic!r} does not exist"
    if found.error is not None:
        return False, f"{label} {topic!r}: {found.error.str()}"
    leaderless = [p.id for p in found.partitions.values() if p.error is not None or p.leader < 0]
    if leaderless:
        return False, f"{label} {topic!r}: no leader for partition(s) {sorted(leaderless)}"
    return True, f"{label} {topic!r} has {len(found.partitions)} partition(s)"


class MongoCheck:
    """``ping`` on MongoDB; the embedded litemongo store has no server, so list its collections."""

    def __init__(self, uri: str, database: str, timeout: float) -> None:
        from ig_refresh_dagster.stores.mongo import open_client

        self.uri, self.database, self.timeout = uri, database, timeout
        timeout_ms = max(1, int(timeout * 1000))
        self.client = KeptClient(
            "mongodb",
            lambda: open_client(uri, timeout_ms=timeout_ms, socket_timeout_ms=timeout_ms),
            lambda client: client.close(),
            one_thread=True,
        )

    def __call__(self) -> tuple[bool, str]:
        if urlsplit(self.uri).scheme in ("mongodb", "mongodb+srv"):
            self.client.use(lambda c: c.admin.command("ping"), self.timeout)
            return True, f"ping ok ({redact_uri(self.uri)})"
        names = self.client.use(lambda c: c[self.database].list_collection_names(), self.timeout)
        return True, f"{len(names)} collection(s) in {self.database!r} ({redact_uri(self.uri)})"


def redis_client(url: str, timeout: float) -> KeptClient[Any]:
    """One Redis connection for the Redis and Graph checks, named so ``CLIENT LIST`` shows it."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from ig_refresh_dagster.stores.clients import redis_from_url

    return KeptClient(
        "redis",
        lambda: redis_from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            client_name=HEALTH_CLIENT_NAME,
            # No retry: a probe reports, and a retry would stretch it past its deadline. (A
            # connection the server closed while idle is replaced when the pool hands it out.)
            retry=Retry(NoBackoff(), 0),
        ),
        lambda client: client.close(),
    )


class RedisCheck:
    def __init__(self, url: str, client: KeptClient[Any], timeout: float) -> None:
        self.url, self.client, self.timeout = url, client, timeout

    def __call__(self) -> tuple[bool, str]:
        import redis

        try:
            self.client.use(lambda c: c.ping(), self.timeout)
        except redis.RedisError as exc:
            return False, f"{redact_uri(self.url)} unreachable: {exc}"
        return True, f"PONG from {redact_uri(self.url)}"


class BudgetRedisCheck:
    """The Redis holding the fleet's budgets (``INSTAGRAM_BUDGET_REDIS_URL``, else ``REDIS_URL``)
    answers and will not evict them. A policy other than ``noeviction`` is not ok; a server that
    refuses ``CONFIG GET`` (managed Redis) is ok with a warning, logged once per change."""

    def __init__(self, url: str, shared: bool, client: KeptClient[Any], timeout: float) -> None:
        self.url, self.shared, self.client, self.timeout = url, shared, client, timeout
        self._last_policy: str | None = ""

    def __call__(self) -> tuple[bool, str]:
        import redis

        from ig_refresh_dagster.stores.eviction import maxmemory_policy, policy_verdict

        where = "REDIS_URL" if self.shared else redact_uri(self.url)
        try:
            policy = self.client.use(maxmemory_policy, self.timeout)
        except (redis.RedisError, Busy) as exc:
            return False, f"{where} unreachable: {exc}"
        safe, verdict = policy_verdict(policy)
        if policy != self._last_policy and safe is not True:
            log.warning("budget Redis %s: %s", where, verdict)
        self._last_policy = policy
        return safe is not False, f"{verdict} ({where})"


class GraphCheck:
    """Each Graph credential by fingerprint (never by token): whether the fetcher has switched it
    off, and its budget this hour. Ok while one is enabled: the fetcher then still uses Graph
    (with none, it only scrapes)."""

    def __init__(
        self,
        credentials: Callable[[], list[str]],
        limit: int,
        client: KeptClient[Any],
        budget_client: KeptClient[Any],
        timeout: float,
    ) -> None:
        self.credentials, self.limit, self.timeout = credentials, limit, timeout
        self.client, self.budget_client = client, budget_client

    def __call__(self) -> tuple[bool, str, dict[str, str]] | tuple[bool, str]:
        import redis

        from ig_refresh_dagster.instagram.credentials import CredentialsInvalid
        from ig_refresh_dagster.stores.budget import HourlyBudget, graph_budget_name
        from ig_refresh_dagster.stores.fetch_memory import FetchMemory

        try:
            fingerprints = self.credentials()
        except CredentialsInvalid as exc:
            return False, f"unknown: {exc}"
        if not fingerprints:
            return True, NOT_CONFIGURED
        try:
            disabled = self.client.use(
                lambda c: {f: FetchMemory(c).graph_disabled(f) for f in fingerprints},
                self.timeout,
            )
        except (redis.RedisError, Busy) as exc:
            return False, f"unknown: Redis unreachable ({exc})"
        try:
            budgets = self.budget_client.use(
                lambda c: {
                    f: HourlyBudget(c, graph_budget_name(f), self.limit).status()
                    for f in fingerprints
                },
                self.timeout,
            )
        except (redis.RedisError, Busy) as exc:
            budgets, budget_error = {}, f"budget unknown: Redis unreachable ({exc})"
        else:
            budget_error = ""
        items = {
            f: _credential_line(disabled[f], budgets.get(f), budget_error) for f in fingerprints
        }
        dead = [f for f in fingerprints if disabled[f] is not None]
        detail = f"{len(fingerprints) - len(dead)} of {len(fingerprints)} credential(s) enabled"
        if dead:
            detail += f"; disabled: {', '.join(dead)}"
        return len(dead) < len(fingerprints), detail, items


def _credential_line(disabled: Any, budget: Any, budget_error: str) -> str:
    """One credential for ``/ready``: on or off (until when, why), its calls, its pause."""
    parts = [
        "enabled"
        if disabled is None
        else f"disabled until {disabled.until_iso()}, or until the token changes: {disabled.reason}"
    ]
    if budget is None:
        parts.append(budget_error)
    else:
        parts.append(f"{budget.used}/{budget.limit} calls this hour")
        if budget.blocked_for_seconds > 0:
            parts.append(f"paused {budget.blocked_for_seconds:.0f}s ({budget.blocked_reason})")
    return "; ".join(parts)
