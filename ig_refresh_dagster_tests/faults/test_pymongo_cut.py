"""The pymongo path (production MongoDB): a connection cut in the middle of a run is a transient
error that the step retries and, if it outlasts the step's retries, a run retry; never a
permanent failure. The network path is a real TCP proxy the test cuts; behind it stands a
minimal wire-protocol server (mongo_wire.py), because no MongoDB server exists here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from bson import ObjectId
from dagster import Failure, build_op_context, instance_for_test
from pymongo.errors import ConnectionFailure

from ig_refresh_dagster.refresh.run.failures import RETRY_STEP_FAILURE_TAG
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.refresh.run.stages import AccountRefresh
from ig_refresh_dagster.stores.mongo import STORE_UNAVAILABLE
from ig_refresh_dagster_tests.faults.mongo_wire import CuttableProxy, MongoWireStandin
from ig_refresh_dagster_tests.refresh.test_exactly_one_log import fail_step
from ig_refresh_dagster_tests.refresh.test_run_status_sensors import make_run
from ig_refresh_dagster_tests.support.refresh_helpers import job_resources

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    with MongoWireStandin() as server, CuttableProxy(server.port) as cuttable:
        yield cuttable


def test_cut_connection_is_transient_and_recovers_when_restored(proxy: CuttableProxy) -> None:
    mongo = MongoResource(uri=f"mongodb://127.0.0.1:{proxy.port}/")
    account_id = str(ObjectId())
    try:
        assert mongo.db().command("ping")["ok"] == 1.0
        mongo.refresh_log().start("run-before-cut", account_id, _now())

        proxy.cut()
        with pytest.raises(Exception) as during:
            mongo.refresh_log().start("run-during-cut", account_id, _now())
        assert isinstance(during.value, STORE_UNAVAILABLE), repr(during.value)
        # Redis and Instagram are never reached: the step stops at the store.
        unused = "http://127.0.0.1:9"
        resources = job_resources(mongo.uri, "redis://127.0.0.1:9", unused, unused)
        with build_op_context(partition_key=account_id) as context:
            refresh = AccountRefresh(context, mongo, resources["redis"], resources["instagram"])
            with pytest.raises(ConnectionFailure):
                # The stage re-raises it for the RetryPolicy rather than failing for good.
                refresh.load()

        proxy.restore()
        assert mongo.db().command("ping")["ok"] == 1.0
    finally:
        mongo.teardown_after_execution(None)


def test_cut_that_outlasts_the_step_retries_asks_for_a_run_retry(proxy: CuttableProxy) -> None:
    uri = f"mongodb://127.0.0.1:{proxy.port}/"
    proxy.cut()
    with instance_for_test() as instance:
        run = make_run(instance, str(ObjectId()))
        with pytest.raises(ConnectionFailure) as raised:
            MongoResource(uri=uri).refresh_log().start(run.run_id, "0" * 24, _now())
        assert not isinstance(raised.value, Failure)
        fail_step(instance, run, uri, raised.value)
        assert instance.get_run_by_id(run.run_id).tags[RETRY_STEP_FAILURE_TAG] == "true"


def _now() -> datetime:
    return datetime.now(UTC)
