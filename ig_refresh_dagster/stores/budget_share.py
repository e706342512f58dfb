"""The backfill share of each fleet-wide hourly budget.

Background refreshes (backfills, the freshness sensor) may use at most a configured share of
each budget, so event-driven refreshes always keep the rest. A background call is charged to a
second ``HourlyBudget`` of its own, whose limit is the share, and then to the shared one. When
the shared budget refuses after the background one admitted, the background slot stays spent:
that errs toward fewer background calls, never toward fewer event calls.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from ig_refresh_dagster.stores.budget import BudgetStatus, HourlyBudget


def background_limit(limit: int, percent: int) -> int:
    return math.floor(limit * max(0, min(percent, 100)) / 100)


def background_budget_of(shared: HourlyBudget, percent: int) -> HourlyBudget:
    """Journaled like ``shared``: after Redis loses its memory the share does not restart."""
    return shared.share("background", background_limit(shared.limit, percent))


class BackgroundBudget:
    """The fetcher's ``Budget`` for a background run: its share first, then the shared budget."""

    def __init__(self, shared: HourlyBudget, percent: int) -> None:
        self._shared = shared
        self._own = background_budget_of(shared, percent)

    def try_acquire(self) -> float:
        wait = self._own.try_acquire()
        if wait > 0:
            return wait
        return self._shared.try_acquire()

    def block_for(self, seconds: float, reason: str) -> None:
        """Meta's throttling concerns every caller, so a block goes to the shared budget."""
        self._shared.block_for(seconds, reason)

    def status(self) -> BudgetStatus:
        """The shared budget's: what every caller of this credential sees."""
        return self._shared.status()


class BudgetRoom(BaseModel):
    """One budget as background traffic sees it right now."""

    name: str
    limit: int
    used: int
    background_limit: int
    background_used: int
    blocked_for_seconds: float

    @property
    def free(self) -> int:
        """Calls background traffic may make now without eating the events' reserve."""
        if self.blocked_for_seconds > 0:
            return 0
        return max(0, min(self.limit - self.used, self.background_limit - self.background_used))


class BackgroundCapacity(BaseModel):
    """What the usable budgets leave to background refreshes (one call per refresh)."""

    budgets: list[BudgetRoom]

    @property
    def free_now(self) -> int:
        return sum(b.free for b in self.budgets)

    @property
    def per_hour(self) -> int:
        return sum(b.background_limit for b in self.budgets)

    def eta_seconds(self, refreshes: int) -> float | None:
        """How long the budgets need to admit ``refreshes`` background refreshes; None when
        the share admits none at all."""
        waiting = max(0, refreshes - self.free_now)
        if waiting == 0:
            return 0.0
        if self.per_hour == 0:
            return None
        return waiting / self.per_hour * 3600

    def summary(self) -> str:
        rooms = ", ".join(
            f"{b.name} {b.free} free now ({b.background_limit}/h share of {b.limit}/h, "
            f"{b.used} used this hour"
            + (f", blocked {b.blocked_for_seconds:.0f}s" if b.blocked_for_seconds else "")
            + ")"
            for b in self.budgets
        )
        return rooms or "no usable budget"


def measure(budgets: list[HourlyBudget], percent: int) -> BackgroundCapacity:
    rooms = []
    for shared in budgets:
        status = shared.status()
        own = background_budget_of(shared, percent).status()
        rooms.append(
            BudgetRoom(
                name=shared.name,
                limit=shared.limit,
                used=status.used,
                background_limit=own.limit,
                background_used=own.used,
                blocked_for_seconds=status.blocked_for_seconds,
            )
        )
    return BackgroundCapacity(budgets=rooms)
