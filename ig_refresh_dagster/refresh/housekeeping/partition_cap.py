"""A cap on the account partitions, so the asset page stays fast past 100k accounts.

Dagster's asset page loads every partition key with its status in one query whose time grows
with the number of keys, and its partition-status cache is keyed on the whole key set, so each
new key makes the next load slower still (docs/scale.md). ``instagram_accounts`` therefore
holds the active accounts only: when it grows past ``INSTAGRAM_MAX_ACCOUNT_PARTITIONS``,
``account_partition_cap_sensor`` deletes the keys refreshed longest ago (never-refreshed keys
first) down to 90 % of the cap, so one new account does not cost an eviction every tick.

Eviction deletes the key only: runs, events, ``DataRefreshLog`` and the Account stay, and every
path that launches a refresh (intake, deferral and freshness sensors, backfill by query) adds
the key back first. Never evicted: a key with a run queued or in progress, a run request a
sensor tick has reserved but not yet submitted (a 500-run tick is submitted over about 90 s,
and an add request for an existing key renews nothing), a failed run that Dagster will retry,
an open deferral, a backfill in progress, or added in the last ``RECENT_MINUTES``: each is
about to run against its key, and a run whose key is gone fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from dagster import (
    ConfigurableResource,
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from pydantic import BaseModel, Field, field_validator

from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.housekeeping.instance_housekeeping import (
    delete_idle_partitions,
    latest_materialization_by_partition,
    partitions_about_to_run,
    partitions_added_within,
    partitions_awaiting_retry,
    partitions_in_requested_backfills,
)
from ig_refresh_dagster.refresh.housekeeping.retention import PROFILE_ASSET
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore

SETTING = "INSTAGRAM_MAX_ACCOUNT_PARTITIONS"
# Evict down to this share of the cap (hysteresis).
KEEP_PERCENT = 90
# A key this young may be waiting for the run it was added for (a sensor tick adds its keys
# before it submits its runs; 500 runs take the daemon about 90 s).
RECENT_MINUTES = 10
# Dagster's run-retry daemon re-executes a failed run within seconds; this is generous.
RETRY_WINDOW = timedelta(hours=1)
# Deleting a key takes about 8 ms on a loaded SQLite instance; a pass stays well inside
# Dagster's 60 s sensor evaluation timeout.
MAX_EVICT_PER_PASS = 2_000
SAMPLE = 5


class AccountPartitionCap(ConfigurableResource):
    """How many account partitions the asset page has to show at most."""

    max_partitions: int = Field(
        description=f"{SETTING}: the most account partitions kept; 0 = no cap"
    )
    keep_added_within_minutes: int = Field(
        default=RECENT_MINUTES,
        ge=0,
        description="keys added this recently are never evicted: their run may not exist yet",
    )

    @field_validator("max_partitions")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"{SETTING} must be 0 (no cap) or a number of partitions, got {value}")
        return value


class CapPlan(BaseModel):
    cap: int
    partitions: int
    evict: list[str]
    never_materialized: int
    protected: int
    left_for_later: int = 0
    recent_minutes: int = RECENT_MINUTES

    @property
    def target(self) -> int:
        return self.cap * KEEP_PERCENT // 100

    def report(self) -> list[str]:
        if self.cap == 0:
            return [f"{self.partitions} account partitions; no cap ({SETTING}=0)"]
        head = f"{self.partitions} account partitions, cap {self.cap} ({SETTING})"
        if self.partitions <= self.cap:
            return [f"{head}: within the cap, nothing to evict"]
        sample = ", ".join(self.evict[:SAMPLE]) + (" …" if len(self.evict) > SAMPLE else "")
        lines = [
            f"{head}: evict {len(self.evict)} to get down to {self.target}, refreshed longest "
            f"ago first ({self.never_materialized} of them never materialized)"
            + (f": {sample}" if sample else ""),
            f"kept whatever their age: {self.protected} with a run queued or in progress, a "
            "retry coming, an open deferral, a backfill in progress, or added in the last "
            f"{self.recent_minutes} min",
        ]
        if self.left_for_later:
            lines.append(
                f"{self.left_for_later} more go in the next passes "
                f"(at most {MAX_EVICT_PER_PASS} a pass)"
            )
        short = self.partitions - len(self.evict) - self.left_for_later - self.target
        if short > 0:
            lines.append(f"{short} over the target stay until their runs are done")
        return lines


def plan_eviction(
    keys: Sequence[str],
    latest: Mapping[str, int],
    protected: set[str],
    cap: int,
    per_pass: int = MAX_EVICT_PER_PASS,
) -> CapPlan:
    """Which keys go, at most ``per_pass`` of them. ``keys`` in the order they were added,
    ``latest`` the storage id of each key's latest materialization (ids grow with time); a key
    without one (never materialized) counts as oldest, the earliest added first."""
    plan = CapPlan(cap=cap, partitions=len(keys), evict=[], never_materialized=0, protected=0)
    if cap == 0 or len(keys) <= cap:
        return plan
    # sorted() is stable: keys with the same age keep the order they were added in.
    candidates = sorted((k for k in keys if k not in protected), key=lambda k: latest.get(k, -1))
    wanted = candidates[: len(keys) - plan.target]
    evict = wanted[:per_pass]
    return plan.model_copy(
        update={
            "evict": evict,
            "never_materialized": sum(1 for k in evict if k not in latest),
            "protected": len(keys) - len(candidates),
            "left_for_later": len(wanted) - len(evict),
        }
    )


def protected_partitions(
    instance: DagsterInstance, refresh_log: RefreshLogStore, recent_minutes: int
) -> set[str]:
    """Keys that something is about to run against (see the module docstring)."""
    return (
        partitions_about_to_run(instance)
        | partitions_awaiting_retry(instance, datetime.now(UTC) - RETRY_WINDOW)
        | partitions_in_requested_backfills(instance, PROFILE_ASSET)
        | partitions_added_within(
            instance, instagram_accounts.name, timedelta(minutes=recent_minutes)
        )
        | refresh_log.deferred_accounts()
    )


def plan_cap(
    instance: DagsterInstance, refresh_log: RefreshLogStore, cap: AccountPartitionCap
) -> CapPlan:
    """Within the cap this is one query; above it, one per kind of protection plus one grouped
    query for every key's latest materialization."""
    keys = instance.get_dynamic_partitions(instagram_accounts.name)
    limit = cap.max_partitions
    if limit == 0 or len(keys) <= limit:
        return plan_eviction(keys, {}, set(), limit)
    plan = plan_eviction(
        keys,
        latest_materialization_by_partition(instance, PROFILE_ASSET),
        protected_partitions(instance, refresh_log, cap.keep_added_within_minutes),
        limit,
    )
    return plan.model_copy(update={"recent_minutes": cap.keep_added_within_minutes})


@sensor(
    minimum_interval_seconds=600,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        f"Keeps the account partitions under {SETTING} (0 = no cap) so the asset page stays "
        "fast: deletes the keys refreshed longest ago down to 90 % of the cap. Runs, events "
        "and DataRefreshLog stay; the next refresh of an evicted account adds it back."
    ),
)
def account_partition_cap_sensor(
    context: SensorEvaluationContext, partition_cap: AccountPartitionCap, mongo: MongoResource
) -> SensorResult:
    plan = plan_cap(context.instance, mongo.refresh_log(), partition_cap)
    lines = plan.report()
    if not plan.evict:
        return SensorResult(skip_reason="; ".join(lines))
    for line in lines:
        context.log.info(line)
    # Deleted here rather than through a DeleteDynamicPartitionsRequest: the daemon would
    # delete them one by one after this evaluation, for up to half a minute, while the other
    # sensors queue runs for the same accounts (the oldest-refreshed accounts are the ones the
    # platform asks to refresh).
    evicted = delete_idle_partitions(context.instance, instagram_accounts.name, plan.evict)
    kept = len(plan.evict) - len(evicted)
    return SensorResult(
        skip_reason=f"evicted {len(evicted)} account partitions"
        + (f"; kept {kept} whose run was queued during the pass" if kept else "")
    )
