"""What the fetcher learned and should not re-learn on every call, shared through Redis.

- "Graph is disabled for this token": keyed by the token's fingerprint, so deploying a new token
  re-enables Graph with no manual step, and the token itself is never stored.
- "@name is not a business/creator account": Business Discovery cannot see it, so spending
  a Graph call on it is waste until the TTL passes (accounts do convert).

Memory is an optimisation, not a safety device (the budgets are): when Redis is unreachable,
reads answer "nothing remembered" and writes are dropped, both with a warning, and the budget
check that follows refuses the call.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)
# Any Redis error, not only an unreachable server: a failover's READONLY or a full server's OOM
# must not fail a fetch over something it merely remembers.
_REDIS_DOWN = (redis.RedisError,)


class FetchMemory:
    def __init__(self, redis: redis.Redis, prefix: str = "ig-refresh") -> None:
        self._redis = redis
        self._prefix = prefix

    def _graph_key(self, token_fingerprint: str) -> str:
        return f"{self._prefix}:graph-disabled:{token_fingerprint}"

    def _not_business_key(self, username: str) -> str:
        return f"{self._prefix}:not-business:{username.lower()}"

    def disable_graph(self, token_fingerprint: str, reason: str) -> None:
        try:
            self._redis.set(self._graph_key(token_fingerprint), reason)
        except _REDIS_DOWN as exc:
            log.warning("could not remember that Graph is disabled (%s): %s", reason, exc)

    def graph_disabled_reason(self, token_fingerprint: str) -> str | None:
        try:
            value = self._redis.get(self._graph_key(token_fingerprint))
        except _REDIS_DOWN as exc:
            log.warning("could not read whether Graph is disabled: %s", exc)
            return None
        return value.decode() if isinstance(value, bytes) else value

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
