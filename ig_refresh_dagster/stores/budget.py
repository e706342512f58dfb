"""Fleet-wide hourly call budget in Redis, rebuilt from a MongoDB journal when Redis forgets.

A sliding-window log (one sorted set per budget) checked and charged by one Lua script, so
every process shares the same count and no window edge admits more than the limit. Time comes
from Redis itself (``TIME``), so clock skew between workers cannot widen the window.

Redis may lose its memory: a restart without persistence, ``FLUSHALL``, a failover to a replica
that had not received the latest writes. So every call is first reserved in the journal
(``budget_journal``), and only then charged in Redis; a refused call's reservation is deleted
(a call Redis would refuse anyway is refused before the journal is touched). An epoch key
holds the replication id (``INFO replication``: ``master_replid``) of the server the window was
last rebuilt on. A restart or a promotion changes that id and ``FLUSHALL`` deletes the key, so
the scripts notice either way and answer "rebuild" instead of deciding. The caller then claims
the rebuild, reads the journal, merges its calls and pauses back into Redis only if its claim
still stands (see ``_CLAIM``), and asks again. Because a reservation precedes its admission, a
rebuilt window holds every call Redis may have admitted: never fewer than the truth, at worst
a few reservations more (calls still in flight, or refused but not yet released, when the
journal was read).

Journal times come from the worker's clock. A reservation is admitted only while Redis's clock
is at most ``skew_allowance`` past it, and a rebuilt call counts from ``min(now, reserved +
skew_allowance)``: never earlier than the admission it stands for, so a rebuilt call does not
leave the window early. A worker whose clock lags Redis's by more than the allowance is
refused (fail closed) with a message saying so.

Redis or the journal being unreachable refuses the call (fail closed): an unreachable limiter
must never mean an unlimited one. The Redis that holds budgets needs ``maxmemory-policy
noeviction``: an evicted log would go unnoticed while its epoch key stays.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import pymongo.errors
import redis
from pydantic import BaseModel

from ig_refresh_dagster.instagram.errors import BudgetUnavailable
from ig_refresh_dagster.stores.budget_journal import BudgetJournal
from ig_refresh_dagster.stores.redis_faults import describe, is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")

NEEDS_REBUILD = -1
STALE_RESERVATION = -2
# A rebuild races with other workers' rebuilds at most a few times; more means Redis keeps
# losing its state while we watch, and refusing is the safe answer.
MAX_REBUILDS = 3

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
local function current(epoch_key)
  return redis.call('GET', epoch_key) == replid
end
local function extend_pause(blocked_key, reason_key, untilms, reason)
  local blocked = tonumber(redis.call('GET', blocked_key) or '0')
  if untilms > now and untilms > blocked then
    redis.call('SET', blocked_key, untilms, 'PX', untilms - now)
    redis.call('SET', reason_key, reason, 'PX', untilms - now)
    return untilms
  end
  return blocked
end
"""

# KEYS: log, blocked-until, epoch. ARGV: limit, window ms, call id, reserved at ms, skew
# allowance ms, 1 when journaled (without a journal there is no epoch either), 1 to charge (0:
# only say whether a call would be admitted, so a refusal costs the journal nothing).
_ACQUIRE = (
    _PRELUDE
    + """
local journaled = ARGV[6] == '1'
local charge = ARGV[7] == '1'
if journaled and not current(KEYS[3]) then return -1 end
if charge and journaled and now - tonumber(ARGV[4]) > tonumber(ARGV[5]) then return -2 end
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
-- A rebuild may have loaded this very reservation: decide on it afresh.
if charge then redis.call('ZREM', KEYS[1], ARGV[3]) end
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then return blocked - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used < limit then
  if charge then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
  end
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] == nil then return window end
return math.max(1, tonumber(oldest[2]) + window - now)
"""
)

# KEYS: blocked-until, blocked-reason. ARGV: ms, reason.
_BLOCK = (
    _PRELUDE
    + """
return extend_pause(KEYS[1], KEYS[2], now + tonumber(ARGV[1]), ARGV[2])
"""
)

# KEYS: log, blocked-until, blocked-reason, epoch. ARGV: window ms, 1 when journaled.
_STATUS = (
    _PRELUDE
    + """
if ARGV[2] == '1' and not current(KEYS[4]) then return {-1} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
return {redis.call('ZCARD', KEYS[1]), math.max(0, blocked - now), redis.call('GET', KEYS[3])}
"""
)

# A rebuild claims the window before it reads the journal and installs what it read only if
# its claim still stands: a FLUSHALL, a restart or another worker's claim in between removes or
# replaces it. So no call can be admitted between the journal read and the install (admitting
# needs a current epoch, and setting one needs the standing claim), and a stale read is never
# installed over calls admitted (and lost again) after it.
# KEYS: epoch, claim. ARGV: claim token. 0 when the window is current already, else Redis's
# time once claimed (the journal is read as of that time, not a worker's clock).
_CLAIM = (
    _PRELUDE
    + """
if current(KEYS[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', 60000)
return now
"""
)

# KEYS: log, blocked-until, blocked-reason, epoch, claim. ARGV: claim token, window ms, skew
# allowance ms, pause until ms (0: none), pause reason, then call id and reserved-at ms pairs.
# Merges rather than replaces: a promoted replica still holds most of the window, with its own
# exact scores. -1 when the claim was lost (nothing installed), else the calls merged.
_REBUILD = (
    _PRELUDE
    + """
if current(KEYS[4]) then return 0 end
if redis.call('GET', KEYS[5]) ~= ARGV[1] then return -1 end
local window = tonumber(ARGV[2])
local skew = tonumber(ARGV[3])
local merged = 0
for i = 6, #ARGV, 2 do
  local score = math.min(now, tonumber(ARGV[i + 1]) + skew)
  if score > now - window then
    merged = merged + redis.call('ZADD', KEYS[1], 'NX', score, ARGV[i])
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], window) end
local pause = tonumber(ARGV[4])
if pause > 0 then extend_pause(KEYS[2], KEYS[3], pause + skew, ARGV[5]) end
redis.call('SET', KEYS[4], replid)
redis.call('DEL', KEYS[5])
return merged
"""
)


GRAPH_BUDGET = "graph"
SCRAPE_BUDGET = "scrape"
# Each kind of fleet-wide budget and the setting holding its hourly limit (per Graph credential
# for ``graph``): the refresh resources and the sidecar build the same budgets (same names, so
# the same Redis keys) from these and ``graph_budget_names``.
BUDGET_LIMIT_SETTINGS = {
    GRAPH_BUDGET: "INSTAGRAM_HOURLY_BUDGET",
    SCRAPE_BUDGET: "INSTAGRAM_SCRAPE_HOURLY_BUDGET",
}


def graph_budget_name(fingerprint: str) -> str:
    """One Graph credential's own budget, named by its token's fingerprint."""
    return f"{GRAPH_BUDGET}:{fingerprint}"


def graph_budget_names(fingerprints: list[str]) -> list[str]:
    """The Graph budgets in use: one per credential, or, with no credential configured, the one
    ``graph`` budget that owner-token insights calls are then charged to."""
    return [graph_budget_name(f) for f in fingerprints] or [GRAPH_BUDGET]


class BudgetStatus(BaseModel):
    """What the budget looks like right now, for /ready and run metadata."""

    name: str
    used: int
    limit: int
    blocked_for_seconds: float
    blocked_reason: str | None


class HourlyBudget:
    """At most ``limit_per_hour`` admissions in any rolling window, across every process, and
    across Redis losing its memory when a ``journal`` is given. Without one, Redis is the only
    record (a Redis that forgets starts a fresh window) and the epoch is neither read nor
    written, so a journal-less budget never hides a loss from a journaled one.

    ``inherits`` names a budget this one replaces (the single ``graph`` budget, for the first
    credential of a pool): whenever the window is rebuilt from the journal, that budget's
    journaled calls and pauses are merged in too, so an upgrade does not start the credential
    that was already spending with an empty hour."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        limit_per_hour: int,
        window_seconds: int = 3600,
        prefix: str = "ig-refresh",
        journal: BudgetJournal | None = None,
        skew_allowance_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        inherits: str | None = None,
    ) -> None:
        self.name = name
        self.limit = limit_per_hour
        self._window_ms = window_seconds * 1000
        self._skew_ms = int(skew_allowance_seconds * 1000)
        self._client = client
        self._journal = journal
        self._clock = clock
        self._prefix = prefix
        self._base = f"{prefix}:budget:{name}"
        self._inherited = None if inherits is None else f"{prefix}:budget:{inherits}"
        self._log_key, self._blocked_key, self._reason_key, self._epoch_key = (
            f"{self._base}:log",
            f"{self._base}:blocked-until",
            f"{self._base}:blocked-reason",
            f"{self._base}:epoch",
        )
        self._claim_key = f"{self._base}:rebuild-claim"
        self._acquire = client.register_script(_ACQUIRE)
        self._block = client.register_script(_BLOCK)
        self._status = client.register_script(_STATUS)
        self._claim = client.register_script(_CLAIM)
        self._rebuild = client.register_script(_REBUILD)

    def share(self, suffix: str, limit_per_hour: int) -> HourlyBudget:
        """A budget named ``<name>:<suffix>`` kept exactly like this one (same Redis, journal,
        window and clock), so it survives Redis losing its memory as this one does."""
        return HourlyBudget(
            self._client,
            f"{self.name}:{suffix}",
            limit_per_hour,
            window_seconds=self._window_ms // 1000,
            prefix=self._prefix,
            journal=self._journal,
            skew_allowance_seconds=self._skew_ms / 1000,
            clock=self._clock,
        )

    def try_acquire(self) -> float:
        """Charge one call; 0.0 when admitted, else seconds until capacity returns. With a
        journal, a call Redis would refuse anyway is refused before anything is written."""
        call_id = uuid.uuid4().hex
        reserved_at = 0
        if self._journal is not None:
            wait_ms = self._ask(call_id, reserved_at, charge=False)
            if wait_ms > 0:
                return wait_ms / 1000.0
            reserved_at = self._now_ms()
            keep_ms = self._window_ms + self._skew_ms
            self._journaled(self._journal.reserve, self._base, call_id, reserved_at, keep_ms)
        wait_ms = self._ask(call_id, reserved_at, charge=True)
        if wait_ms != 0:
            self._release(call_id)
        if wait_ms == STALE_RESERVATION:
            raise BudgetUnavailable(
                f"{self.name} budget: this worker's clock is more than "
                f"{self._skew_ms / 1000:.0f}s behind the budget Redis's (or it stalled between "
                "reserving and charging a call); refusing rather than misdating the call"
            )
        return wait_ms / 1000.0

    def _ask(self, call_id: str, reserved_at: int, charge: bool) -> int:
        journaled = int(self._journal is not None)
        return int(
            self._decide(
                self._acquire,
                [self._log_key, self._blocked_key, self._epoch_key],
                [
                    self.limit,
                    self._window_ms,
                    call_id,
                    reserved_at,
                    self._skew_ms,
                    journaled,
                    int(charge),
                ],
            )
        )

    def block_for(self, seconds: float, reason: str) -> None:
        """Admit nothing for ``seconds`` (never shortens an existing block)."""
        ms = max(1, int(seconds * 1000))
        if self._journal is not None:
            until_ms = self._now_ms() + ms
            pause_id = uuid.uuid4().hex
            self._journaled(
                self._journal.pause, self._base, pause_id, until_ms, reason, self._skew_ms
            )
        self._run(self._block, [self._blocked_key, self._reason_key], [ms, reason])

    def status(self) -> BudgetStatus:
        used, blocked_ms, reason = self._decide(
            self._status,
            [self._log_key, self._blocked_key, self._reason_key, self._epoch_key],
            [self._window_ms, int(self._journal is not None)],
        )
        return BudgetStatus(
            name=self.name,
            used=int(used),
            limit=self.limit,
            blocked_for_seconds=int(blocked_ms) / 1000.0,
            blocked_reason=reason.decode() if isinstance(reason, bytes) else reason,
        )

    def _decide(self, script, keys: list[str], args: list) -> object:
        """Run a deciding script; when Redis's state is not the one last rebuilt (or was never
        built), rebuild it from the journal first."""
        for _ in range(MAX_REBUILDS + 1):
            result = self._run(script, keys, args)
            first = result[0] if isinstance(result, list) else result
            if first != NEEDS_REBUILD or self._journal is None:  # only journaled ones ask
                return result
            self._rebuild_window(self._journal)
        raise BudgetUnavailable(
            f"{self.name} budget: Redis lost its state again during each of {MAX_REBUILDS} "
            "rebuilds; refusing calls"
        )

    def _rebuild_window(self, journal: BudgetJournal) -> None:
        """Claim, read the journal, install if the claim stands (else the caller asks again)."""
        token = uuid.uuid4().hex
        claimed_at = int(self._run(self._claim, [self._epoch_key, self._claim_key], [token]))
        if not claimed_at:
            return
        window = self._journaled(journal.window, self._base, claimed_at, self._inherited)
        args: list = [
            token,
            self._window_ms,
            self._skew_ms,
            window.pause_until_ms,
            window.pause_reason,
        ]
        for call_id, at_ms in window.calls:
            args += [call_id, at_ms]
        merged = int(
            self._run(
                self._rebuild,
                [
                    self._log_key,
                    self._blocked_key,
                    self._reason_key,
                    self._epoch_key,
                    self._claim_key,
                ],
                args,
            )
        )
        if merged < 0:
            return
        log.log(
            logging.WARNING if merged else logging.INFO,
            "%s budget: Redis held no window for this server (first use, restart, FLUSHALL or "
            "failover); rebuilt it from the journal, restoring %s call(s)",
            self.name,
            merged,
        )

    def _release(self, call_id: str) -> None:
        """Best effort: a reservation left behind only counts against a future rebuild."""
        if self._journal is None:
            return
        try:
            self._journal.release(call_id)
        except pymongo.errors.PyMongoError as exc:
            log.warning("%s budget: could not release a refused reservation: %s", self.name, exc)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _journaled(self, operation: Callable[..., T], *args: object) -> T:
        try:
            return operation(*args)
        except pymongo.errors.PyMongoError as exc:
            raise BudgetUnavailable(
                f"budget journal unavailable, refusing {self.name} calls: {type(exc).__name__}"
            ) from None

    def _run(self, script, keys: list[str], args: list) -> object:
        try:
            return script(keys=keys, args=args)
        except redis.RedisError as exc:
            if not is_transient(exc):
                raise
            raise BudgetUnavailable(
                f"budget store unreachable or failing, refusing {self.name} calls: {describe(exc)}"
            ) from None
