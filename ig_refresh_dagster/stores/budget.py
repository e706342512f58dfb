"""Fleet-wide hourly call budget in Redis.

A sliding-window log (one sorted set per budget) checked and charged by one Lua script, so
every process shares the same count and no window edge admits more than the limit. Time comes
from Redis itself (``TIME``), so clock skew between workers cannot widen the window.
Redis being unreachable refuses the call (fail closed): an unreachable limiter must never mean
an unlimited one.
"""

from __future__ import annotations

import uuid

import redis
from pydantic import BaseModel

from ig_refresh_dagster.instagram.errors import BudgetUnavailable

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then return blocked - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] == nil then return window end
return math.max(1, tonumber(oldest[2]) + window - now)
"""

_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untilms = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untilms > current then
  redis.call('SET', KEYS[1], untilms, 'PX', tonumber(ARGV[1]))
  redis.call('SET', KEYS[2], ARGV[2], 'PX', tonumber(ARGV[1]))
end
return untilms
"""

_STATUS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
return {redis.call('ZCARD', KEYS[1]), math.max(0, blocked - now), redis.call('GET', KEYS[3])}
"""


GRAPH_BUDGET = "graph"
SCRAPE_BUDGET = "scrape"
# Each fleet-wide budget and the setting holding its hourly limit: the refresh resources and the
# sidecar's ``/metrics`` build the same budgets (same names, so the same Redis keys) from these.
BUDGET_LIMIT_SETTINGS = {
    GRAPH_BUDGET: "INSTAGRAM_HOURLY_BUDGET",
    SCRAPE_BUDGET: "INSTAGRAM_SCRAPE_HOURLY_BUDGET",
}


class BudgetStatus(BaseModel):
    """What the budget looks like right now, for /ready and run metadata."""

    name: str
    used: int
    limit: int
    blocked_for_seconds: float
    blocked_reason: str | None


class HourlyBudget:
    """At most ``limit_per_hour`` admissions in any rolling window, across every process."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        limit_per_hour: int,
        window_seconds: int = 3600,
        prefix: str = "ig-refresh",
    ) -> None:
        self.name = name
        self.limit = limit_per_hour
        self._window_ms = window_seconds * 1000
        self._client = client
        base = f"{prefix}:budget:{name}"
        self._log_key, self._blocked_key, self._reason_key = (
            f"{base}:log",
            f"{base}:blocked-until",
            f"{base}:blocked-reason",
        )
        self._acquire = client.register_script(_ACQUIRE)
        self._block = client.register_script(_BLOCK)
        self._status = client.register_script(_STATUS)

    def try_acquire(self) -> float:
        """Charge one call; 0.0 when admitted, else seconds until capacity returns."""
        wait_ms = self._run(
            self._acquire,
            [self._log_key, self._blocked_key],
            [self.limit, self._window_ms, uuid.uuid4().hex],
        )
        return int(wait_ms) / 1000.0

    def block_for(self, seconds: float, reason: str) -> None:
        """Admit nothing for ``seconds`` (never shortens an existing block)."""
        ms = max(1, int(seconds * 1000))
        self._run(self._block, [self._blocked_key, self._reason_key], [ms, reason])

    def status(self) -> BudgetStatus:
        used, blocked_ms, reason = self._run(
            self._status, [self._log_key, self._blocked_key, self._reason_key], [self._window_ms]
        )
        return BudgetStatus(
            name=self.name,
            used=int(used),
            limit=self.limit,
            blocked_for_seconds=int(blocked_ms) / 1000.0,
            blocked_reason=reason.decode() if isinstance(reason, bytes) else reason,
        )

    def _run(self, script, keys: list[str], args: list) -> object:
        try:
            return script(keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BudgetUnavailable(
                f"budget store unreachable, refusing {self.name} calls: {type(exc).__name__}"
            ) from None
