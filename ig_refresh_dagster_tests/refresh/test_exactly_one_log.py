"""Exactly one DataRefreshLog per run in the paths the refresh itself writes: a re-execution
from failure, and a refresh that failed for good, transiently or not."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bson import ObjectId
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    JobDefinition,
    ReexecutionOptions,
    execute_job,
    instance_for_test,
    reconstructable,
)
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.run.failures import RETRY_STEP_FAILURE_TAG, record_failure
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.mongo import STORE_UNAVAILABLE, open_client
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore
from ig_refresh_dagster_tests.refresh.test_run_status_sensors import make_run, store_down
from ig_refresh_dagster_tests.support.refresh_helpers import (
    job_resources,
    real_defs,
    seed_account,
    web_profile_body,
)

JSON_PATH = "/api/v1/users/web_profile_info/"


def scrape_only_refresh_job() -> JobDefinition:
    """The code location's refresh job against the test's services (passed through the
    environment, because ``execute_job`` rebuilds the job from this importable function)."""
    resources = job_resources(
        os.environ["TEST_MONGODB_URI"],
        os.environ["TEST_REDIS_URL"],
        os.environ["TEST_INSTAGRAM_URL"] + "/v21.0",
        os.environ["TEST_INSTAGRAM_URL"],
        token=None,
    )
    return real_defs(resources).resolve_job_def("instagram_refresh_job")


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def test_reexecution_from_failure_writes_its_own_entry(
    monkeypatch, mongo_db, mongo_uri, redis_url_for_test, redis_client, httpserver: HTTPServer
) -> None:
    monkeypatch.setenv("TEST_MONGODB_URI", mongo_uri)
    monkeypatch.setenv("TEST_REDIS_URL", redis_url_for_test)
    monkeypatch.setenv("TEST_INSTAGRAM_URL", httpserver.url_for("").rstrip("/"))
    account_id = seed_account(mongo_db, handle="janedoe")
    job = reconstructable(scrape_only_refresh_job)
    tags = {"dagster/partition": account_id}
    # A permanent failure in the fetch stage, after the load stage opened the entry.
    httpserver.expect_oneshot_request(JSON_PATH).respond_with_data("", status=404)
    httpserver.expect_oneshot_request("/janedoe/").respond_with_data("gone", status=404)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(instagram_accounts.name, [account_id])
        with execute_job(job, instance, tags=tags) as first:
            assert not first.success
        httpserver.expect_request(JSON_PATH).respond_with_json(web_profile_body("janedoe", 4242))
        options = ReexecutionOptions.from_failure(first.run_id, instance)
        with execute_job(job, instance, tags=tags, reexecution_options=options) as second:
            assert second.success

    (failed,) = list(mongo_db["DataRefreshLog"].find({"runId": first.run_id}))
    assert failed["status"] == "FAILED"
    (done,) = list(mongo_db["DataRefreshLog"].find({"runId": second.run_id}))
    assert done["status"] == "COMPLETED"
    assert (done["accountId"], done["platform"]) == (ObjectId(account_id), "INSTAGRAM")
    assert done["startedAt"] is not None
    assert done["dataSnapshot"]["after"]["followerCount"] == 4242


def fail_step(instance: DagsterInstance, run, mongo_uri: str, exc: BaseException) -> None:
    """What the refresh step does when its last attempt raised ``exc``."""
    account_id = run.tags["dagster/partition"]
    mongo = MongoResource(uri=mongo_uri)
    record_failure(instance, run.run_id, account_id, mongo, exc, logging.getLogger(__name__))


def test_outage_that_outlasts_step_retries_asks_for_a_run_retry(
    instance, mongo_db, mongo_uri
) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    fail_step(instance, run, mongo_uri, ServerSelectionTimeoutError("127.0.0.1:1: refused"))
    assert instance.get_run_by_id(run.run_id).tags[RETRY_STEP_FAILURE_TAG] == "true"
    (log,) = list(mongo_db["DataRefreshLog"].find({"runId": run.run_id}))
    assert log["status"] == "FAILED"
    assert "run retry requested" in log["error"]


def test_permanent_failure_is_not_retried(instance, mongo_db, mongo_uri) -> None:
    account_id = str(ObjectId())
    run = make_run(instance, account_id)
    fail_step(instance, run, mongo_uri, Failure("load account: no Account", allow_retries=False))
    assert RETRY_STEP_FAILURE_TAG not in instance.get_run_by_id(run.run_id).tags
    (log,) = list(mongo_db["DataRefreshLog"].find({"runId": run.run_id}))
    assert log["error"] == "load account: no Account"


def test_hook_with_mongo_down_still_requests_the_retry(instance, mongo_db, mongo_uri) -> None:
    """The entry is left to the log reconciler; the retry must not depend on MongoDB."""
    run = make_run(instance, str(ObjectId()))
    with store_down(mongo_uri):
        fail_step(instance, run, mongo_uri, ServerSelectionTimeoutError("down"))
    assert instance.get_run_by_id(run.run_id).tags[RETRY_STEP_FAILURE_TAG] == "true"
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.NOT_STARTED
    assert list(mongo_db["DataRefreshLog"].find({"runId": run.run_id})) == []


def test_unreachable_embedded_store_is_transient_not_permanent(mongo_db, mongo_uri) -> None:
    """A blocked store folder (new clients) and a write-locked file (open clients) are what
    the embedded store's outage looks like; both must be retried, like MongoDB's network
    errors, rather than failing the refresh for good."""
    with store_down(mongo_uri), pytest.raises(ConnectionFailure, match="unreachable"):
        open_client(mongo_uri)
    mongo_db["DataRefreshLog"].insert_one({"runId": "warm-up"})
    lock = sqlite3.connect(
        Path(mongo_uri.removeprefix("litemongo://")) / "ratecreator" / "DataRefreshLog"
    )
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(STORE_UNAVAILABLE):
            RefreshLogStore(mongo_db).start("run-locked", str(ObjectId()), datetime.now(UTC))
    finally:
        lock.rollback()
        lock.close()
