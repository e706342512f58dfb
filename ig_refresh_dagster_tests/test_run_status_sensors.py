"""Runs that end outside their steps (a crashed run worker, a cancel) still close their log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from bson import ObjectId
from dagster import (
    DagsterEventType,
    DagsterInstance,
    build_run_status_sensor_context,
    instance_for_test,
)

from ig_refresh_dagster import defs
from ig_refresh_dagster.refresh.job import instagram_refresh_job
from ig_refresh_dagster.refresh.resources import MongoResource
from ig_refresh_dagster.refresh.run_status import (
    refresh_canceled_log_sensor,
    refresh_failure_log_sensor,
)
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore

NOW = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def make_run(instance: DagsterInstance, account_id: str, **tags: str):
    job = defs.resolve_job_def(instagram_refresh_job.name)
    return instance.create_run_for_job(job_def=job, tags={"dagster/partition": account_id, **tags})


def evaluate(sensor, instance: DagsterInstance, run, kind: DagsterEventType, mongo_uri: str):
    (entry,) = instance.all_logs(run.run_id, of_type=kind)
    with build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
        resources={"mongo": MongoResource(uri=mongo_uri)},
    ) as context:
        failed = kind == DagsterEventType.RUN_FAILURE
        sensor(context.for_run_failure() if failed else context)


def report_crash(instance: DagsterInstance, run, mongo_uri: str) -> None:
    instance.report_run_failed(run, "run worker exited unexpectedly")
    evaluate(refresh_failure_log_sensor, instance, run, DagsterEventType.RUN_FAILURE, mongo_uri)


def test_crashed_run_leaves_no_in_progress_log(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    report_crash(instance, run, mongo_uri)
    (log,) = list(mongo_db["DataRefreshLog"].find({"runId": run.run_id}))
    assert log["status"] == "FAILED"
    assert "run worker exited unexpectedly" in log["error"]


def test_final_status_written_by_the_run_is_kept(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    store = RefreshLogStore(mongo_db)
    store.fail(run.run_id, account_id, "load account: no Account", NOW)
    report_crash(instance, run, mongo_uri)
    (log,) = list(mongo_db["DataRefreshLog"].find({"runId": run.run_id}))
    assert log["error"] == "load account: no Account"


def test_run_about_to_be_retried_is_left_alone(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id, **{"dagster/will_retry": "true"})
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    report_crash(instance, run, mongo_uri)
    (log,) = list(mongo_db["DataRefreshLog"].find({"runId": run.run_id}))
    assert log["status"] == "IN_PROGRESS"


def test_canceled_run_closes_its_log(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    instance.report_run_canceled(run)
    evaluate(refresh_canceled_log_sensor, instance, run, DagsterEventType.RUN_CANCELED, mongo_uri)
    (log,) = list(mongo_db["DataRefreshLog"].find({"runId": run.run_id}))
    assert (log["status"], log["error"]) == ("FAILED", "run canceled before it finished")
