"""``deferred_refresh_sensor``: runs a deferred refresh again once its wait is over.

A refresh that had to wait for Instagram ended its run as DEFERRED with a ``retryAt``. Each
tick this sensor requests a new run for deferrals whose ``retryAt`` has passed:

- no more per tick than the budgets can admit right now (free Graph calls of every credential
  whose token is not disabled, plus free scrapes, minus retry runs still waiting to
  start), so a backlog of deferrals drains as capacity returns instead of deferring itself
  again all at once;
- one run per account, and none for an account whose retry is already queued;
- ``run_key = deferred:<deferred run id>``, so each deferral is requested exactly once even if a
  tick is evaluated twice; a deferral whose retry run already exists is marked as retried;
- with the launch tags of the run that deferred (``launch/requests.py``): a deferred backfill
  or freshness refresh stays background work within the backfill share, and only an
  operator's own launch skips the minimum interval when it is retried.

The new run adopts the deferral when it starts (``retryOf`` / ``retriedBy`` in the log). If it
has to wait again it is deferred again and picked up again here; after ``DEFERRAL_LIMIT`` of
deferral the run gives up as FAILED (see ``refresh/stages.py``), so nothing waits forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ig_refresh_dagster.refresh.launch.requests import (
    partition_requests,
    refresh_request,
    retry_tags,
)
from ig_refresh_dagster.refresh.run.job import instagram_refresh_job
from ig_refresh_dagster.refresh.run.resources import InstagramResource, MongoResource
from ig_refresh_dagster.refresh.run.tags import RETRY_OF as RETRY_OF_TAG
from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster.stores.refresh_log import DeferredRefresh

TRIGGER_TAG = "ig-refresh/trigger"
TRIGGER = "deferred-retry"
# Bounds one tick's work whatever the backlog (Dagster's evaluation timeout is 60 s).
MAX_DUE_PER_TICK = 200
_NOT_STARTED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def _free(budget: HourlyBudget) -> tuple[int, str]:
    status = budget.status()
    if status.blocked_for_seconds > 0:
        return 0, f"{status.name} paused for {status.blocked_for_seconds:.0f}s"
    free = max(0, status.limit - status.used)
    return free, f"{status.name} {status.used}/{status.limit} used"


def budget_capacity(instagram: InstagramResource) -> tuple[int, str]:
    """How many refreshes the budgets could admit now, and why (for the tick log)."""
    budgets = [*instagram.usable_graph_budgets(), instagram.scrape_budget()]
    parts = [_free(b) for b in budgets]
    return sum(free for free, _ in parts), ", ".join(why for _, why in parts)


def _run_request(deferral: DeferredRefresh, original: Mapping[str, str] | None) -> RunRequest:
    """Carries the launch tags of the run that deferred (``original``: None when pruned)."""
    return refresh_request(
        deferral.account_id,
        f"deferred:{deferral.run_id}",
        retry_tags(original),
        extra={
            "ig-refresh/account-id": deferral.account_id,
            RETRY_OF_TAG: deferral.run_id,
            TRIGGER_TAG: TRIGGER,
        },
    )


@sensor(
    job=instagram_refresh_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Runs deferred refreshes again once their wait is over and budget is free.",
)
def deferred_refresh_sensor(
    context: SensorEvaluationContext, mongo: MongoResource, instagram: InstagramResource
) -> SensorResult:
    log = mongo.refresh_log()
    due = log.due_deferrals(datetime.now(UTC), MAX_DUE_PER_TICK)
    if not due:
        return SensorResult(skip_reason="no deferred refresh is due")

    # Retry runs Dagster already has (a tick evaluated again, a run that died before it could
    # adopt its deferral): record them, never request them again.
    existing = context.instance.get_run_records(
        RunsFilter(tags={RETRY_OF_TAG: [d.run_id for d in due]})
    )
    for record in existing:
        run = record.dagster_run
        log.mark_retried(run.tags[RETRY_OF_TAG], run.run_id)
    requested = {r.dagster_run.tags[RETRY_OF_TAG] for r in existing}
    due = [d for d in due if d.run_id not in requested]
    waiting = context.instance.get_run_records(
        RunsFilter(tags={TRIGGER_TAG: TRIGGER}, statuses=_NOT_STARTED)
    )
    busy = {r.dagster_run.tags.get("dagster/partition") for r in waiting}

    capacity, why = budget_capacity(instagram)
    capacity = max(0, capacity - len(waiting))
    chosen: list[DeferredRefresh] = []
    for deferral in due:
        if len(chosen) >= capacity:
            break
        if deferral.account_id in busy:
            continue
        busy.add(deferral.account_id)
        chosen.append(deferral)

    for deferral in chosen:
        context.log.info(
            f"retrying the refresh of {deferral.account_id} deferred by run {deferral.run_id} "
            f"(due since {deferral.retry_at:%H:%M:%S} UTC): {deferral.reason[:200]}"
        )
    summary = (
        f"{len(due)} deferred refresh(es) due, {len(chosen)} requested; "
        f"capacity {capacity} ({why}; {len(waiting)} retry run(s) not started yet)"
    )
    context.log.info(summary)
    originals = (
        {
            r.run_id: r.tags
            for r in context.instance.get_runs(RunsFilter(run_ids=[d.run_id for d in chosen]))
        }
        if chosen
        else {}
    )
    requests = [_run_request(d, originals.get(d.run_id)) for d in chosen]
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partition_requests(requests),
        skip_reason=None if chosen else summary,
    )
