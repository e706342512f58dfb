"""MongoDB indexes that coexist with what the collections already hold, index failures that never
fail a refresh, and one client per URI for the life of the process (litemongo stands in for
MongoDB: what holds only on real MongoDB is listed in docs/embedded-stack.md)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from datetime import UTC, datetime

import pymongo.errors
import pytest
from bson import ObjectId
from dagster import DagsterInstance
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.clients import mongo_client
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore, by_run
from ig_refresh_dagster_tests.support.refresh_helpers import (
    job_resources,
    run_refresh,
    seed_account,
    web_profile_body,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LEGACY_ENTRIES = 3000


def test_run_id_index_builds_over_the_old_consumers_entries_without_run_id(mongo_db) -> None:
    """The old consumer wrote thousands of entries with no runId (and some with a null one): a
    plain unique index cannot be built over them; the partial one is, and still keeps one entry
    per run."""
    coll = mongo_db["DataRefreshLog"]
    coll.insert_many(
        [{"accountId": ObjectId(), "status": "COMPLETED"} for _ in range(LEGACY_ENTRIES)]
        + [{"runId": None, "status": "FAILED"} for _ in range(3)]
    )
    log = RefreshLogStore(mongo_db)
    log.ensure_indexes()

    account_id = str(ObjectId())
    log.start("run-1", account_id, NOW)
    log.start("run-1", account_id, NOW)
    log.start("run-2", account_id, NOW)
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        coll.insert_one({"runId": "run-1"})
    assert coll.count_documents({"runId": {"$type": "string"}}) == 2
    assert coll.count_documents({}) == LEGACY_ENTRIES + 3 + 2
    (index,) = [ix for ix in coll.index_information().values() if ix.get("unique")]
    assert index["key"] == [("runId", 1)]
    assert index["partialFilterExpression"] == {"runId": {"$type": "string"}}
    # MongoDB's planner uses a partial index only for filters that name its $type (litemongo
    # has no planner: this checks the filter every write sends).
    assert by_run("run-1") == {"runId": {"$eq": "run-1", "$type": "string"}}


@pytest.mark.slow
def test_an_index_that_cannot_be_created_is_logged_once_and_refreshes_run(
    mongo_db,
    mongo_uri: str,
    redis_client,
    redis_url_for_test: str,
    httpserver: HTTPServer,
    instance: DagsterInstance,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An operator's own index under the same name (or a user without createIndex) makes
    creating ours fail: both refreshes still complete, and the warning is written once."""
    mongo_db["DataRefreshLog"].create_index("runId")  # same name, different options
    account_id = seed_account(mongo_db, handle="janedoe")
    httpserver.expect_request("/api/v1/users/web_profile_info/").respond_with_json(
        web_profile_body("janedoe")
    )
    resources = job_resources(
        mongo_uri,
        redis_url_for_test,
        httpserver.url_for("/v21.0"),
        httpserver.url_for(""),
        token=None,
    )

    with caplog.at_level(logging.WARNING, logger="ig_refresh_dagster.stores.mongo"):
        first = run_refresh(account_id, resources, instance)
        second = run_refresh(account_id, resources, instance)

    assert first.success and second.success
    warnings = [r for r in caplog.records if "could not create an index" in r.getMessage()]
    assert len(warnings) == 1
    assert "RefreshLogStore.ensure_indexes" in warnings[0].getMessage()
    assert mongo_db["DataRefreshLog"].count_documents({"status": "COMPLETED"}) == 2


def test_one_client_per_uri_across_resource_instances_and_runs(mongo_uri: str) -> None:
    first = MongoResource(uri=mongo_uri).db().client
    again = MongoResource(uri=mongo_uri).db().client
    assert first is again
    assert first.list_database_names() is not None, "still open: nothing closed it per run"


def test_litemongo_gets_one_client_per_thread(mongo_uri: str) -> None:
    """Its SQLite connections belong to the thread that opened them."""
    mine = mongo_client(mongo_uri)
    seen: list[object] = []

    def other_thread() -> None:
        client = mongo_client(mongo_uri)
        client["ratecreator"]["probe"].insert_one({"from": "thread"})
        seen.append(client)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(30)
    assert seen and seen[0] is not mine
    assert mine["ratecreator"]["probe"].count_documents({"from": "thread"}) == 1


def test_process_clients_are_closed_when_the_process_exits() -> None:
    program = """
from ig_refresh_dagster.stores.clients import ProcessClients

class Client:
    def close(self):
        print("closed", flush=True)

clients = ProcessClients()
assert clients.get("uri", Client) is clients.get("uri", Client)
print("exiting", flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["exiting", "closed"]


def test_account_handles_get_an_index_for_look_ups_by_handle(mongo_uri: str, mongo_db) -> None:
    """Without it the history page and backfill by handles scan every Account; the handles
    stay non-unique (the platform's own data decides that)."""
    seed_account(mongo_db, handle="same")
    seed_account(mongo_db, handle="same")
    MongoResource(uri=mongo_uri).db()
    keys = [ix["key"] for ix in mongo_db["Account"].index_information().values()]
    assert [("handle", 1)] in [list(k) for k in keys]
