"""The log reconciler: every finished refresh run ends with one terminal DataRefreshLog entry,
whatever ended it (a crash, a cancel, a MongoDB outage when the run tried to close it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bson import ObjectId
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    SensorResult,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.storage.runs.schema import RunsTable
from dagster._core.utils import make_new_run_id
from dagster._record import copy

from ig_refresh_dagster import defs
from ig_refresh_dagster.refresh.housekeeping.run_status import BATCH, refresh_log_reconciler
from ig_refresh_dagster.refresh.run.job import instagram_refresh_job
from ig_refresh_dagster.refresh.run.refresh_runs import PARTITION_TAG, PROFILE
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore
from ig_refresh_dagster_tests.support.store_faults import embedded_store_unreachable

NOW = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def make_run(instance: DagsterInstance, account_id: str, **tags: str):
    job = defs.resolve_job_def(instagram_refresh_job.name)
    return instance.create_run_for_job(job_def=job, tags={"dagster/partition": account_id, **tags})


def reconcile(instance: DagsterInstance, mongo_uri: str, cursor: str | None = None):
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"mongo": MongoResource(uri=mongo_uri)},
    ) as context:
        result = refresh_log_reconciler(context)
    assert isinstance(result, SensorResult)
    return result


def entries(mongo_db, run_id: str) -> list[dict]:
    return list(mongo_db["DataRefreshLog"].find({"runId": run_id}))


def test_crashed_run_leaves_no_in_progress_log(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    instance.report_run_failed(run, "run worker exited unexpectedly")
    reconcile(instance, mongo_uri)
    (log,) = entries(mongo_db, run.run_id)
    assert log["status"] == "FAILED"
    assert "run worker exited unexpectedly" in log["error"]
    assert log["completedAt"] is not None


def test_run_that_failed_before_its_first_write_gets_one_entry(
    instance, mongo_db, mongo_uri
) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    instance.report_run_failed(run, "start timeout")
    reconcile(instance, mongo_uri)
    reconcile(instance, mongo_uri)
    (log,) = entries(mongo_db, run.run_id)
    assert (log["status"], log["accountId"], log["platform"]) == (
        "FAILED",
        ObjectId(account_id),
        "INSTAGRAM",
    )


def test_final_status_written_by_the_run_is_kept(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    RefreshLogStore(mongo_db).fail(run.run_id, account_id, "load account: no Account", NOW)
    instance.report_run_failed(run, "run worker exited unexpectedly")
    reconcile(instance, mongo_uri)
    (log,) = entries(mongo_db, run.run_id)
    assert log["error"] == "load account: no Account"


def test_run_about_to_be_retried_is_closed_and_says_so(instance, mongo_db, mongo_uri) -> None:
    """The retry is a new run with its own entry, so this run's entry must not stay open."""
    account_id = str(ObjectId())
    run = make_run(instance, account_id, **{"dagster/will_retry": "true"})
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    instance.report_run_failed(run, "run worker exited unexpectedly")
    reconcile(instance, mongo_uri)
    (log,) = entries(mongo_db, run.run_id)
    assert log["status"] == "FAILED"
    assert "Dagster retries the run" in log["error"]


def test_canceled_run_closes_its_log(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    instance.report_run_canceled(run)
    reconcile(instance, mongo_uri)
    (log,) = entries(mongo_db, run.run_id)
    assert (log["status"], log["error"]) == ("FAILED", "run canceled before it finished")


def test_runs_still_in_flight_are_left_open(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    instance.report_run_canceling(run)
    reconcile(instance, mongo_uri)
    (log,) = entries(mongo_db, run.run_id)
    assert log["status"] == "IN_PROGRESS"


def store_down(mongo_uri: str):
    return embedded_store_unreachable(Path(mongo_uri.removeprefix("litemongo://")))


def test_entries_left_open_by_a_mongo_outage_are_closed_once_it_answers(
    instance, mongo_db, mongo_uri
) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    instance.report_run_failed(run, "fetch profile: MongoDB unreachable")
    first = reconcile(instance, mongo_uri)
    with store_down(mongo_uri):
        during = reconcile(instance, mongo_uri, first.cursor)
        later_run = make_run(instance, account_id)
        instance.report_run_failed(later_run, "MongoDB unreachable")
        still_down = reconcile(instance, mongo_uri, during.cursor)
    assert "MongoDB unreachable" in still_down.skip_reason.skip_message
    assert entries(mongo_db, later_run.run_id) == []
    reconcile(instance, mongo_uri, still_down.cursor)
    (log,) = entries(mongo_db, later_run.run_id)
    assert log["status"] == "FAILED"
    assert json.loads(still_down.cursor) == json.loads(during.cursor)


def test_successful_run_whose_entry_was_lost_is_completed(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name), run.run_id
    )
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS
    reconcile(instance, mongo_uri)
    (log,) = entries(mongo_db, run.run_id)
    assert log["status"] == "COMPLETED"


def make_asset_job_run(instance: DagsterInstance, account_id: str, **tags: str):
    """A run as UI Materialize and every backfill create it: Dagster's implicit asset job."""
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={PROFILE})
    return instance.create_run_for_job(
        job_def=job,
        asset_selection=frozenset({PROFILE}),
        tags={"dagster/partition": account_id, **tags},
    )


def test_crashed_asset_job_run_gets_its_entry_closed(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_asset_job_run(instance, account_id)
    assert run.job_name == "__ASSET_JOB"
    RefreshLogStore(mongo_db).start(run.run_id, account_id, NOW)
    instance.report_run_failed(run, "run worker exited unexpectedly")
    result = reconcile(instance, mongo_uri)
    (log,) = entries(mongo_db, run.run_id)
    assert log["status"] == "FAILED"
    assert "checked 1 finished runs, closed 1" in result.skip_reason.skip_message


@pytest.mark.slow
def test_a_burst_of_finished_runs_does_not_stall_the_reconciler(
    instance, mongo_db, mongo_uri
) -> None:
    """More runs than one tick reads finish together (a bulk cancel): later ticks move past
    them, and a crash after the burst is still closed. The runs are copies of one created run
    (creating each from the job costs 0.3 s), and their update times are then set to one
    instant, as a fast machine's bulk cancel leaves them: on this shared machine 520 cancels
    take longer than the old reconciler's 10 s overlap, which would hide its stall."""
    burst = BATCH + 20
    base = make_run(instance, str(ObjectId()))
    for _ in range(burst - 1):
        copy_run = copy(base, run_id=make_new_run_id(), tags={PARTITION_TAG: str(ObjectId())})
        instance.add_run(copy_run)
    canceled = [*instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.NOT_STARTED]))]
    assert len(canceled) == burst
    for run in canceled:
        instance.report_run_canceled(run)
    # Their entries are already closed (a cancel the run saw): only the paging is under test.
    mongo_db["DataRefreshLog"].insert_many(
        {"runId": r.run_id, "status": "FAILED", "error": "canceled"} for r in canceled
    )
    with instance.run_storage.connect() as conn:
        conn.execute(RunsTable.update().values(update_timestamp=datetime.now()))
    cursor = None
    for _ in range(3):
        cursor = reconcile(instance, mongo_uri, cursor).cursor
    account_id = str(ObjectId())
    crashed = make_run(instance, account_id)
    RefreshLogStore(mongo_db).start(crashed.run_id, account_id, NOW)
    instance.report_run_failed(crashed, "run worker exited unexpectedly")
    reconcile(instance, mongo_uri, cursor)
    (log,) = entries(mongo_db, crashed.run_id)
    assert log["status"] == "FAILED"
    assert mongo_db["DataRefreshLog"].count_documents({"status": "IN_PROGRESS"}) == 0
    assert mongo_db["DataRefreshLog"].count_documents({"status": "FAILED"}) == burst + 1
