"""The log reconciler: every finished refresh run ends with exactly one terminal DataRefreshLog.

The refresh writes the entry itself (its load stage opens it; its log stage, or its last failed
attempt, closes it). What it cannot cover is closed here, with the run's real outcome:
a run whose worker died (see ``dead_runs.py``), a run canceled while queued, a run that failed
before its first write, and a MongoDB outage at the end of a run, when its failure could not
be written.
The sensor walks finished refresh runs in the order Dagster last updated them and keeps its
place in its cursor only up to the last run it settled, so entries left open while MongoDB was
down are closed on the first tick after MongoDB answers again.
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
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.refresh.run.job import instagram_refresh_job
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.mongo import STORE_UNAVAILABLE
from ig_refresh_dagster.stores.refresh_log import IN_PROGRESS

FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
# Runs per tick; each costs one indexed MongoDB read (batched) and at most one write.
BATCH = 500
# Re-read this much before the cursor: runs updated in the same instant as the last one of a
# batch, or committed a moment late, are not skipped (closing is idempotent).
OVERLAP_SECONDS = 10.0
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


def _since(cursor: str | None) -> float:
    if cursor:
        try:
            return float(json.loads(cursor)["updated_after"])
        except (ValueError, KeyError, TypeError):
            pass
    return time.time() - FIRST_LOOKBACK_SECONDS


@sensor(
    minimum_interval_seconds=15,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Closes the DataRefreshLog of every finished refresh run that its steps left open or "
        "never wrote (crash, cancel, MongoDB outage), with the run's real outcome."
    ),
)
def refresh_log_reconciler(context: SensorEvaluationContext, mongo: MongoResource) -> SensorResult:
    since = _since(context.cursor)
    records = context.instance.get_run_records(
        RunsFilter(
            job_name=instagram_refresh_job.name,
            statuses=FINISHED,
            updated_after=datetime.fromtimestamp(since - OVERLAP_SECONDS, UTC),
        ),
        limit=BATCH,
        order_by="update_timestamp",
        ascending=True,
    )
    settled, closed = since, 0
    try:
        ids = [r.dagster_run.run_id for r in records]
        statuses = mongo.refresh_log().statuses(ids) if ids else {}
        for record in records:
            run = record.dagster_run
            account_id = run.tags.get("dagster/partition", "")
            if is_account_id(account_id) and statuses.get(run.run_id, IN_PROGRESS) == IN_PROGRESS:
                status, detail = outcome_of(context.instance, run)
                if mongo.refresh_log().close_open(
                    run.run_id, account_id, status, detail, datetime.now(UTC)
                ):
                    closed += 1
                    context.log.info(f"DataRefreshLog of {run.run_id} closed {status}: {detail}")
            settled = max(settled, record.update_timestamp.timestamp())
    except STORE_UNAVAILABLE as exc:
        context.log.warning(
            f"MongoDB unreachable ({type(exc).__name__}); {closed} entries closed, the rest "
            "are closed once it answers"
        )
        reason = f"MongoDB unreachable: {type(exc).__name__}; will retry next tick"
    else:
        reason = f"checked {len(records)} finished runs, closed {closed} entries"
    return SensorResult(cursor=json.dumps({"updated_after": settled}), skip_reason=reason)
