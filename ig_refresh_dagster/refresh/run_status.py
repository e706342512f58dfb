"""Run-status sensors: close the DataRefreshLog of runs that ended outside their steps.

A run killed with its worker, or canceled while queued, never reaches the failure hook; these
sensors see the run's final status and mark its entry FAILED.
"""

import time
from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    run_failure_sensor,
    run_status_sensor,
)
from pymongo.errors import ConnectionFailure

from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.refresh.job import instagram_refresh_job
from ig_refresh_dagster.refresh.resources import MongoResource


def _close_refresh_log(context: RunStatusSensorContext, mongo: MongoResource, error: str) -> None:
    """Run-status sensors advance their cursor even when the body raises, so the write gets
    its own retries; a run Dagster is about to retry is left to that retry."""
    run = context.dagster_run
    account_id = run.tags.get("dagster/partition", "")
    if run.tags.get("dagster/will_retry") == "true" or not is_account_id(account_id):
        return
    for attempt in range(3):
        try:
            if mongo.refresh_log().close_open(run.run_id, account_id, error, datetime.now(UTC)):
                context.log.info(f"DataRefreshLog of run {run.run_id} closed as FAILED: {error}")
            return
        except ConnectionFailure:
            if attempt == 2:
                raise
            time.sleep(2**attempt)


@run_failure_sensor(
    monitored_jobs=[instagram_refresh_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Closes the DataRefreshLog of refresh runs that died outside their steps.",
)
def refresh_failure_log_sensor(context: RunFailureSensorContext, mongo: MongoResource) -> None:
    _close_refresh_log(context, mongo, f"run failed: {context.failure_event.message}"[:500])


@run_status_sensor(
    run_status=DagsterRunStatus.CANCELED,
    monitored_jobs=[instagram_refresh_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Closes the DataRefreshLog of canceled refresh runs.",
)
def refresh_canceled_log_sensor(context: RunStatusSensorContext, mongo: MongoResource) -> None:
    _close_refresh_log(context, mongo, "run canceled before it finished")
