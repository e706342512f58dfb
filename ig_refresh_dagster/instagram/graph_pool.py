"""Several Graph credentials, each with its own budget, pause and disabled state.

Meta limits, throttles and revokes per token, so each credential is charged to its own
fleet-wide budget and sidelined on its own: a dead or throttled credential costs the fleet that
credential's share, never Graph as a whole. Callers take the credentials in rotation (each
pool starts at a random one, then moves on by one per call), so no credential is spent first
every time by every process while the others idle.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel

from ig_refresh_dagster.instagram.errors import BudgetExhausted, BudgetUnavailable
from ig_refresh_dagster.instagram.graph import GraphClient


class BudgetState(Protocol):
    used: int
    limit: int
    blocked_for_seconds: float
    blocked_reason: str | None


class Budget(Protocol):
    def try_acquire(self) -> float:
        """0.0 when admitted (and charged), else seconds until capacity; raises
        BudgetUnavailable when the store is unreachable."""
        ...

    def block_for(self, seconds: float, reason: str) -> None:
        """Admit nothing for ``seconds``."""
        ...

    def status(self) -> BudgetState: ...


class Memory(Protocol):
    """What the fetcher learned and should not re-learn on every call, shared by the fleet
    (``stores.fetch_memory`` keeps it in Redis)."""

    def disable_graph(self, token_fingerprint: str, reason: str) -> None: ...

    def graph_disabled_reason(self, token_fingerprint: str) -> str | None: ...

    def remember_not_business(self, username: str, ttl_seconds: int) -> None: ...

    def is_not_business(self, username: str) -> bool: ...


class GraphLane:
    """One credential as callers use it: its client and its own budget."""

    def __init__(self, client: GraphClient, budget: Budget) -> None:
        self.client = client
        self.budget = budget

    @property
    def fingerprint(self) -> str:
        return self.client.token_fingerprint


class CredentialState(BaseModel):
    """One credential right now, by fingerprint (never by token)."""

    fingerprint: str
    disabled_reason: str | None
    used: int | None = None
    limit: int | None = None
    paused_seconds: float = 0.0
    paused_reason: str | None = None
    budget_error: str | None = None

    @property
    def usable(self) -> bool:
        """Not disabled, not paused, and with calls left this hour."""
        return (
            self.disabled_reason is None
            and self.budget_error is None
            and self.paused_seconds == 0
            and self.used is not None
            and self.limit is not None
            and self.used < self.limit
        )


def charge_first(budgets: Sequence[Budget], subject: str) -> None:
    """Charge one call to the first budget that admits it, or raise BudgetExhausted with the
    shortest wait (BudgetUnavailable when the store is unreachable)."""
    waits = []
    for budget in budgets:
        wait = budget.try_acquire()
        if wait <= 0:
            return
        waits.append(wait)
    retry_after = min(waits, default=3600.0)
    raise BudgetExhausted(
        f"Graph budget exhausted for {subject}; capacity in {retry_after:.0f}s",
        retry_after=retry_after,
    )


class GraphPool:
    def __init__(self, lanes: Sequence[GraphLane], memory: Memory, start: int | None = None):
        self.lanes = list(lanes)
        self._memory = memory
        self._next = random.randrange(max(1, len(self.lanes))) if start is None else start

    def __bool__(self) -> bool:
        return bool(self.lanes)

    def rotation(self) -> list[GraphLane]:
        """Every credential, starting one further along than the previous call did."""
        if not self.lanes:
            return []
        first = self._next % len(self.lanes)
        self._next = first + 1
        return self.lanes[first:] + self.lanes[:first]

    def disabled_reason(self, lane: GraphLane) -> str | None:
        return self._memory.graph_disabled_reason(lane.fingerprint)

    def status(self) -> str | None:
        """None while some credential is not disabled (or none is configured); otherwise each
        credential's reason, by fingerprint."""
        reasons = []
        for lane in self.lanes:
            reason = self.disabled_reason(lane)
            if reason is None:
                return None
            reasons.append(f"credential {lane.fingerprint}: {reason}")
        return "; ".join(reasons) or None

    def states(self) -> list[CredentialState]:
        """Each credential's disabled reason, budget use and pause."""
        states = []
        for lane in self.lanes:
            state = CredentialState(
                fingerprint=lane.fingerprint, disabled_reason=self.disabled_reason(lane)
            )
            try:
                budget = lane.budget.status()
            except BudgetUnavailable as exc:
                state.budget_error = exc.message
            else:
                state.used, state.limit = budget.used, budget.limit
                state.paused_seconds = budget.blocked_for_seconds
                state.paused_reason = budget.blocked_reason
            states.append(state)
        return states

    def charge(self, subject: str) -> None:
        """Charge a call made with someone else's token (insights) to a credential with
        capacity, so every Graph call counts against the pool's hourly ceiling."""
        charge_first([lane.budget for lane in self.rotation()], subject)
