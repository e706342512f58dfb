"""Accounts by name: the Kafka sensor tags each run with the account's handle from one MongoDB
query per tick, a run launched without one tags itself when it starts, and the materialization
names the account. Also: UI-launched materializations run in process, like the refresh job."""

from __future__ import annotations

import pytest
from bson import ObjectId
from dagster import DagsterInstance, in_process_executor, instance_for_test
from litemongo._vendor.mongomock.collection import Collection
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.refresh.run.tags import HANDLE, SOURCE
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.kafka_helpers import kafka_resource as kafka
from ig_refresh_dagster_tests.support.kafka_helpers import refresh_event, tick
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    job_resources,
    run_refresh,
    seed_account,
)


@pytest.fixture
def account_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A spy on litemongo's collection reads (the real store still answers), because the
    number of queries a tick makes is not observable from outside the store."""
    reads: list[str] = []
    for method in ("find", "find_one", "aggregate", "distinct", "count_documents"):
        original = getattr(Collection, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            if self.name == "Account":
                reads.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Collection, method, spy)
    return reads


def test_sensor_tags_each_run_with_its_handle_from_one_query_per_tick(
    topics: Topics, instance: DagsterInstance, mongo_db, mongo_uri: str, account_reads
) -> None:
    acme = seed_account(mongo_db, handle="acme.studio")
    bare = seed_account(mongo_db, accountId="cache.only")
    missing = str(ObjectId())
    topics.publish([refresh_event(i) for i in (acme, bare, missing, acme)])

    result = tick(instance, kafka(topics), None, mongo_uri=mongo_uri)

    assert account_reads == ["find"]
    tags = {r.partition_key: r.tags for r in result.run_requests}
    assert tags[acme][HANDLE] == "acme.studio"
    assert tags[bare][HANDLE] == "cache.only"
    assert HANDLE not in tags[missing], "no such Account: the run fails and says so"
    for request in result.run_requests:
        assert request.tags[SOURCE] == "event"
        assert request.partition_key not in request.tags.values(), "dagster/partition has it"


def test_a_tick_without_messages_reads_no_account(
    topics: Topics, instance: DagsterInstance, mongo_uri: str, account_reads
) -> None:
    result = tick(instance, kafka(topics), None, mongo_uri=mongo_uri)
    assert result.run_requests == []
    assert account_reads == []


def test_run_launched_without_a_handle_names_itself_and_its_materialization(
    mongo_db, mongo_uri: str, redis_url_for_test: str, redis_client, httpserver: HTTPServer
) -> None:
    """As a UI Materialize or a Dagster backfill launches it: no ig-refresh tags at all."""
    account_id = seed_account(mongo_db, handle="natgeo", accountId="ig-1")
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(graph_body("natgeo"))
    resources = job_resources(
        mongo_uri, redis_url_for_test, httpserver.url_for("/v21.0"), httpserver.url_for("")
    )
    with instance_for_test() as instance:
        result = run_refresh(account_id, resources, instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).tags[HANDLE] == "natgeo"
    (materialization,) = result.asset_materializations_for_node("instagram_profile")
    assert materialization.metadata["username"].value == "natgeo"


def test_ui_launched_materializations_run_in_process_like_the_refresh_job() -> None:
    """Materialize, re-execute and UI backfills run the implicit asset job; with Dagster's
    default it would start one process per step."""
    from ig_refresh_dagster import defs

    with instance_for_test():
        implicit = defs.resolve_implicit_global_asset_job_def()
        refresh = defs.resolve_job_def("instagram_refresh_job")
    assert implicit.executor_def is in_process_executor
    assert refresh.executor_def is in_process_executor
