"""What the fetcher learned and should not re-learn on every call, shared through Redis.

- "Graph is disabled for this token": keyed by the token's fingerprint, so deploying a new token
  re-enables Graph with no manual step, and the token itself is never stored. It also expires
  (24 h by default): Meta's token errors are not all permanent (a password change that is then
  confirmed, a permission restored, an outage reported as code 190), and a fleet that stopped
  using Graph for good after one of them would scrape, slower and more blocked, forever.
- "@name is not a business/creator account": Business Discovery cannot see it, so spending
  a Graph call on it is waste until the TTL passes (accounts do convert).

Memory is an optimisation, not a safety device (the budgets are): when Redis is unreachable,
reads answer "nothing remembered" and writes are dropped, both with a warning, and the budget
check that follows refuses the call.
"""

from __future__ import annotations

import datetime
import logging

import redis
from pydantic import BaseModel

log = logging.getLogger(__name__)
# Any Redis error, not only an unreachable server: a failover's READONLY or a full server's OOM
# must not fail a fetch over something it merely remembers.
_REDIS_DOWN = (redis.RedisError,)
DEFAULT_GRAPH_DISABLED_TTL_SECONDS = 24 * 3600


class GraphDisabled(BaseModel):
    reason: str
    until: datetime.datetime

    def until_iso(self) -> str:
        return self.until.isoformat(timespec="seconds").replace("+00:00", "Z")


class FetchMemory:
    def __init__(
        self,
        redis: redis.Redis,
        prefix: str = "ig-refresh",
        graph_disabled_ttl_seconds: int = DEFAULT_GRAPH_DISABLED_TTL_SECONDS,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._graph_disabled_ttl = max(1, int(graph_disabled_ttl_seconds))

    def _graph_key(self, token_fingerprint: str) -> str:
        return f"{self._prefix}:graph-disabled:{token_fingerprint}"

    def _not_business_key(self, username: str) -> str:
        return f"{self._prefix}:not-business:{username.lower()}"

    def disable_graph(self, token_fingerprint: str, reason: str) -> None:
        """Graph off for this token until it changes or the TTL passes, whichever comes first."""
        try:
            self._redis.set(self._graph_key(token_fingerprint), reason, ex=self._graph_disabled_ttl)
        except _REDIS_DOWN as exc:
            log.warning("could not remember that Graph is disabled (%s): %s", reason, exc)

    def graph_disabled_reason(self, token_fingerprint: str) -> str | None:
        """The fetcher's question; Redis down reads as "nothing remembered" (see above)."""
        try:
            disabled = self.graph_disabled(token_fingerprint)
        except _REDIS_DOWN as exc:
            log.warning("could not read whether Graph is disabled: %s", exc)
            return None
        return disabled.reason if disabled else None

    def graph_disabled(self, token_fingerprint: str) -> GraphDisabled | None:
        """Why and until when Graph is off for this token; raises when Redis is unreachable
        (the sidecar must not report "enabled" then).

        A key without an expiry was written before the TTL existed: it gets one now, so no
        token stays disabled forever.
        """
        key = self._graph_key(token_fingerprint)
        pipe = self._redis.pipeline(transaction=False)
        value, ttl_ms = pipe.get(key).pttl(key).execute()
        if value is None:
            return None
        if ttl_ms < 0:
            self._redis.expire(key, self._graph_disabled_ttl)
            ttl_ms = self._graph_disabled_ttl * 1000
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=ttl_ms)
        reason = value.decode() if isinstance(value, bytes) else value
        return GraphDisabled(reason=reason, until=until)

    def remember_not_business(self, username: str, ttl_seconds: int) -> None:
        try:
            self._redis.set(self._not_business_key(username), "1", ex=max(1, int(ttl_seconds)))
        except _REDIS_DOWN as exc:
            log.warning("could not remember that @%s is not a business account: %s", username, exc)

    def is_not_business(self, username: str) -> bool:
        try:
            return bool(self._redis.exists(self._not_business_key(username)))
        except _REDIS_DOWN as exc:
            log.warning("could not read whether @%s is a business account: %s", username, exc)
            return False
