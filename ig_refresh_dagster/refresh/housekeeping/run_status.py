"""The log reconciler: every finished refresh run ends with exactly one terminal DataRefreshLog.

The refresh writes the entry itself (its load stage opens it; its log stage, or its last failed
attempt, closes it). What it cannot cover is closed here, with the run's real outcome:
a run whose worker died (see ``dead_runs.py``), a run canceled while queued, a run that failed
before its first write, and a MongoDB outage at the end of a run, when its failure could not
be written.
The sensor walks the run-finished events (success, failure, cancel) by their event-log storage
id, a strict order, so a burst of any size (a bulk cancel) is read page by page and never read
twice. It keeps its place in its cursor only up to the last run it settled, so entries left
open while MongoDB was down are closed on the first tick after MongoDB answers again. Refresh
runs are told apart by asset and partition (``housekeeping/refresh_runs.py``), so runs of UI
Materialize and backfills (``__ASSET_JOB``) are closed too.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    RunStatusChangeRecordsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ig_refresh_dagster.refresh.run.refresh_runs import account_of, is_refresh_run
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.mongo import STORE_UNAVAILABLE
from ig_refresh_dagster.stores.refresh_log import IN_PROGRESS

FINISH_EVENTS = (
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
)
# Finish events of each kind per tick; each run costs one batched MongoDB read, at most a write.
BATCH = 500
# A cursor of the version that paged by update time is read again from this much before it.
OVERLAP_SECONDS = 10.0
# Each tick reads again this many storage ids (events of any kind) before its position: on
# PostgreSQL an event can commit after one with a higher id was read. Fewer finish events than
# a BATCH fit in them, so a tick always reaches past its position (closing is idempotent).
OVERLAP_STORAGE_IDS = 200
# With no cursor yet (first deployment), look this far back rather than at all history.
FIRST_LOOKBACK_SECONDS = 24 * 3600.0


def _failure_detail(instance: DagsterInstance, run: DagsterRun) -> str:
    """The failed step's error when there is one, else the run's own failure message."""
    steps = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.STEP_FAILURE, ascending=False, limit=1
    ).records
    if steps:
        event = steps[0].event_log_entry.get_dagster_event()
        error = event.step_failure_data.error if event.step_failure_data else None
        text = f"{event.step_key}: {error.message.strip() if error else 'failed'}"
    else:
        runs = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_FAILURE, ascending=False, limit=1
        ).records
        text = runs[0].event_log_entry.message if runs else "run failed"
    if run.tags.get("dagster/will_retry") == "true":
        text += "; Dagster retries the run"
    return f"run failed: {text}"[:500]


def outcome_of(instance: DagsterInstance, run: DagsterRun) -> tuple[str, str]:
    """The log status and detail a finished run's entry gets when the run did not write it."""
    if run.status == DagsterRunStatus.SUCCESS:
        return "COMPLETED", "run succeeded; entry closed by the log reconciler"
    if run.status == DagsterRunStatus.CANCELED:
        return "FAILED", "run canceled before it finished"
    return "FAILED", _failure_detail(instance, run)


def _positions(cursor: str | None) -> tuple[dict[str, int], float]:
    """Where each kind of finish event was last read (its storage id), and the time to start
    from for a kind never read (the cursor of the version before paging by storage id stored
    ``updated_after``; with no cursor, ``FIRST_LOOKBACK_SECONDS`` back)."""
    since = time.time() - FIRST_LOOKBACK_SECONDS
    try:
        saved = json.loads(cursor) if cursor else {}
    except ValueError:
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    after = saved.get("after")
    positions = (
        {k: int(v) for k, v in after.items() if isinstance(v, int)}
        if isinstance(after, dict)
        else {}
    )
    if isinstance(saved.get("since"), int | float):
        since = float(saved["since"])
    elif isinstance(saved.get("updated_after"), int | float):
        since = float(saved["updated_after"]) - OVERLAP_SECONDS
    return positions, since


def _finished_since(
    instance: DagsterInstance, kind: DagsterEventType, after: int | None, since: float
) -> list[tuple[int, str]]:
    """The next ``BATCH`` finish events of one kind, as (storage id, run id) in storage order."""
    records = instance.fetch_run_status_changes(
        RunStatusChangeRecordsFilter(
            kind,
            after_storage_id=None if after is None else max(0, after - OVERLAP_STORAGE_IDS),
            after_timestamp=None if after is not None else since,
        ),
        limit=BATCH,
        ascending=True,
    ).records
    return [(r.storage_id, r.run_id) for r in records]


@sensor(
    minimum_interval_seconds=15,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Closes the DataRefreshLog of every finished refresh run that its steps left open or "
        "never wrote (crash, cancel, MongoDB outage), with the run's real outcome."
    ),
)
def refresh_log_reconciler(context: SensorEvaluationContext, mongo: MongoResource) -> SensorResult:
    positions, since = _positions(context.cursor)
    checked = closed = 0
    reason = None
    for kind in FINISH_EVENTS:
        found = _finished_since(context.instance, kind, positions.get(kind.value), since)
        if not found:
            continue
        runs = {
            run.run_id: run
            for run in context.instance.get_runs(RunsFilter(run_ids=[i for _, i in found]))
            if is_refresh_run(run)
        }
        try:
            statuses = mongo.refresh_log().statuses(list(runs)) if runs else {}
            for storage_id, run_id in found:
                run = runs.get(run_id)
                if run is not None and statuses.get(run_id, IN_PROGRESS) == IN_PROGRESS:
                    closed += _close(context, mongo, run)
                positions[kind.value] = max(storage_id, positions.get(kind.value, 0))
        except STORE_UNAVAILABLE as exc:
            context.log.warning(
                f"MongoDB unreachable ({type(exc).__name__}); {closed} entries closed, the rest "
                "are closed once it answers"
            )
            reason = f"MongoDB unreachable: {type(exc).__name__}; will retry next tick"
            break
        checked += len(runs)
    return SensorResult(
        cursor=json.dumps({"after": positions, "since": since}),
        skip_reason=reason or f"checked {checked} finished runs, closed {closed} entries",
    )


def _close(context: SensorEvaluationContext, mongo: MongoResource, run: DagsterRun) -> int:
    status, detail = outcome_of(context.instance, run)
    if not mongo.refresh_log().close_open(
        run.run_id, account_of(run), status, detail, datetime.now(UTC)
    ):
        return 0
    context.log.info(f"DataRefreshLog of {run.run_id} closed {status}: {detail}")
    return 1
