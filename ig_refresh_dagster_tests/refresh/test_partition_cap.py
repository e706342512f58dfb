"""The account-partition cap: what ``account_partition_cap_sensor`` evicts, what it never
evicts, and that an evicted account refreshes normally again.

Real parts only: a temporary SQLite Dagster instance, litemongo, valkey-server and
pytest-httpserver as Instagram; runs are real refresh runs. Materializations the order tests
need are reported as runless events (a real materialization event per partition, without a
run), so "refreshed longest ago" is the order they were reported in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetMaterialization,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterRunStatus,
    JobDefinition,
    ReexecutionOptions,
    RunRequest,
    SensorResult,
    build_sensor_context,
    execute_job,
    reconstructable,
)
from dagster import build_resources as build_dagster_resources
from dagster._core.errors import DagsterError
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import InstigatorType, TickData, TickStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.definitions import build_resources
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.housekeeping.instance_housekeeping import delete_idle_partitions
from ig_refresh_dagster.refresh.housekeeping.partition_cap import (
    SETTING,
    AccountPartitionCap,
    account_partition_cap_sensor,
    plan_cap,
    plan_eviction,
)
from ig_refresh_dagster.refresh.housekeeping.retention import PROFILE_ASSET
from ig_refresh_dagster.refresh.launch.freshness import instagram_freshness_sensor
from ig_refresh_dagster.refresh.run.job import instagram_refresh_job
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster_tests.refresh.test_exactly_one_log import JSON_PATH, scrape_only_refresh_job
from ig_refresh_dagster_tests.support.refresh_helpers import (
    job_resources,
    run_refresh,
    seed_account,
    web_profile_body,
)

BIN = Path(sys.executable).parent
ORIGIN = RemoteJobOrigin(
    repository_origin=RemoteRepositoryOrigin(
        code_location_origin=RegisteredCodeLocationOrigin("ig-refresh"),
        repository_name="__repository__",
    ),
    job_name=instagram_refresh_job.name,
)


def keys(n: int) -> list[str]:
    return [f"{i:024x}" for i in range(1, n + 1)]


def materialize(instance: DagsterInstance, *partitions: str) -> None:
    for key in partitions:
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key=PROFILE_ASSET, partition=key)
        )


def materializations(instance: DagsterInstance, key: str) -> int:
    found = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=PROFILE_ASSET, asset_partitions=[key]), limit=10
    )
    return len(found.records)


def evaluate(
    instance: DagsterInstance, mongo_uri: str, cap: int, recent_minutes: int = 0
) -> tuple[SensorResult, set[str]]:
    """One evaluation; returns its result and the keys it deleted."""
    resources = {
        "mongo": MongoResource(uri=mongo_uri),
        "partition_cap": AccountPartitionCap(
            max_partitions=cap, keep_added_within_minutes=recent_minutes
        ),
    }
    before = set(remaining(instance))
    with build_sensor_context(instance=instance, resources=resources) as context:
        result = account_partition_cap_sensor(context)
    assert not result.dynamic_partitions_requests and not result.run_requests
    return result, before - set(remaining(instance))


def evicted(outcome: tuple[SensorResult, set[str]]) -> set[str]:
    return outcome[1]


def remaining(instance: DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(instagram_accounts.name))


def test_plan_evicts_never_materialized_then_oldest_down_to_ninety_percent() -> None:
    k = keys(12)
    # Materialized k[0..9], k[5] longest ago, then k[0], k[1], ...; k[10], k[11] never.
    latest = {k[5]: 1, **{key: 10 + i for i, key in enumerate(k[:10]) if key != k[5]}}

    plan = plan_eviction(k, latest, protected=set(), cap=10)

    assert plan.target == 9
    assert plan.evict == [k[10], k[11], k[5]]
    assert plan.never_materialized == 2
    assert plan_eviction(k[:10], latest, set(), cap=10).evict == [], "at the cap: nothing"


def test_one_pass_evicts_a_bounded_number_and_says_how_many_are_left() -> None:
    k = keys(30)
    first = plan_eviction(k, {}, protected=set(), cap=10, per_pass=5)
    assert first.evict == k[:5]
    assert first.left_for_later == 16
    assert "16 more go in the next passes" in " ".join(first.report())


def test_sensor_evicts_the_oldest_and_keeps_runs_and_events(
    instance: DagsterInstance, mongo_uri: str, mongo_db
) -> None:
    k = keys(12)
    instance.add_dynamic_partitions(instagram_accounts.name, k)
    materialize(instance, k[3], *k[:3], *k[4:10])  # k[3] refreshed longest ago; k[10:] never

    outcome = evaluate(instance, mongo_uri, cap=10)

    assert evicted(outcome) == {k[10], k[11], k[3]}
    assert remaining(instance) == [key for key in k if key not in evicted(outcome)]
    assert "evicted 3 account partitions" in outcome[0].skip_reason.skip_message
    # Only the key went: the evicted account's materialization is still in the event log.
    assert materializations(instance, k[3]) == 1


def test_hysteresis_one_new_key_does_not_evict_every_tick(
    instance: DagsterInstance, mongo_uri: str, mongo_db
) -> None:
    k = keys(21)
    instance.add_dynamic_partitions(instagram_accounts.name, k[:20])
    materialize(instance, *k[:20])
    assert evicted(evaluate(instance, mongo_uri, cap=20)) == set()

    instance.add_dynamic_partitions(instagram_accounts.name, [k[20]])
    materialize(instance, k[20])
    first = evaluate(instance, mongo_uri, cap=20)
    assert evicted(first) == set(k[:3]), "21 keys, cap 20: down to 18, oldest first"

    instance.add_dynamic_partitions(instagram_accounts.name, keys(23)[21:])
    second = evaluate(instance, mongo_uri, cap=20)
    assert evicted(second) == set() and len(remaining(instance)) == 20
    assert "within the cap" in second[0].skip_reason.skip_message


def test_cap_zero_is_off(instance: DagsterInstance, mongo_uri: str, mongo_db) -> None:
    instance.add_dynamic_partitions(instagram_accounts.name, keys(50))
    outcome = evaluate(instance, mongo_uri, cap=0)
    assert evicted(outcome) == set()
    assert len(remaining(instance)) == 50
    assert f"no cap ({SETTING}=0)" in outcome[0].skip_reason.skip_message


def test_keys_with_something_about_to_run_are_never_evicted(
    instance: DagsterInstance, mongo_uri: str, mongo_db
) -> None:
    k = keys(10)
    instance.add_dynamic_partitions(instagram_accounts.name, k)
    statuses = {
        k[0]: DagsterRunStatus.QUEUED,
        k[1]: DagsterRunStatus.NOT_STARTED,
        k[2]: DagsterRunStatus.STARTING,
        k[3]: DagsterRunStatus.STARTED,
        k[4]: DagsterRunStatus.FAILURE,
    }
    for key, status in statuses.items():
        # k[4]: a failed run Dagster's retry daemon is about to re-execute on its partition.
        retry = {"dagster/will_retry": "true"} if status == DagsterRunStatus.FAILURE else {}
        instance.add_run(
            DagsterRun(
                job_name=instagram_refresh_job.name,
                status=status,
                tags={"dagster/partition": key, **retry},
                remote_job_origin=ORIGIN,  # Dagster requires one for a queued run
            )
        )
    # An open deferral: deferred_refresh_sensor will run it again.
    mongo_db["DataRefreshLog"].insert_one(
        {"runId": "deferred-run", "accountId": seed_account(mongo_db), "status": "DEFERRED"}
    )
    deferred = str(mongo_db["DataRefreshLog"].find_one({})["accountId"])
    instance.add_dynamic_partitions(instagram_accounts.name, [deferred])
    materialize(instance, *k[5:])  # the unprotected keys are the most recently refreshed

    outcome = evaluate(instance, mongo_uri, cap=2)

    assert evicted(outcome) == set(k[5:])
    assert sorted(remaining(instance)) == sorted([*k[:5], deferred])


def test_a_run_queued_after_the_plan_still_keeps_its_key(instance: DagsterInstance) -> None:
    """The pass reads the runs in flight again before each batch it deletes."""
    k = keys(3)
    instance.add_dynamic_partitions(instagram_accounts.name, k)
    instance.add_run(
        DagsterRun(
            job_name=instagram_refresh_job.name,
            status=DagsterRunStatus.QUEUED,
            tags={"dagster/partition": k[1]},
            remote_job_origin=ORIGIN,
        )
    )
    assert delete_idle_partitions(instance, instagram_accounts.name, k) == [k[0], k[2]]
    assert remaining(instance) == [k[1]]


def reserve_tick(instance: DagsterInstance, partitions: list[str], submitted: int = 0) -> None:
    """What the sensor daemon writes before it creates a tick's runs one by one: the tick,
    STARTED, with its run requests and their reserved run ids (``submitted`` already created)."""
    run_ids = [make_new_run_id() for _ in partitions]
    instance.create_tick(
        TickData(
            instigator_origin_id="intake-origin",
            instigator_name="instagram_refresh_sensor",
            instigator_type=InstigatorType.SENSOR,
            status=TickStatus.STARTED,
            timestamp=time.time(),
            selector_id="intake-selector",
            run_requests=[RunRequest(run_key=f"event:{p}", partition_key=p) for p in partitions],
            reserved_run_ids=run_ids,
            run_ids=run_ids[:submitted],
        )
    )


def test_eviction_racing_a_500_run_tick_never_deletes_a_key_it_is_about_to_run(
    instance: DagsterInstance, mongo_uri: str, mongo_db
) -> None:
    """The pass is planned; then an event tick reserves 500 runs for the accounts refreshed
    longest ago (exactly those the plan evicts) and creates them over the next 90 s; then
    the pass deletes. Every key of the tick's runs not created yet stays; the others go."""
    k = keys(600)
    instance.add_dynamic_partitions(instagram_accounts.name, k)
    materialize(instance, *k[500:])
    refresh_log = MongoResource(uri=mongo_uri).refresh_log()
    plan = plan_cap(
        instance, refresh_log, AccountPartitionCap(max_partitions=100, keep_added_within_minutes=0)
    )
    assert set(k[:500]) <= set(plan.evict)

    reserve_tick(instance, k[:500], submitted=20)
    deleted = delete_idle_partitions(instance, instagram_accounts.name, plan.evict)

    assert set(deleted) == set(plan.evict) - set(k[20:500])
    assert set(k[20:500]) <= set(remaining(instance))
    outcome = evaluate(instance, mongo_uri, cap=100)
    assert not evicted(outcome) & set(k[20:500]), "the sensor itself keeps them too"


def test_keys_just_added_are_kept_for_their_run(
    instance: DagsterInstance, mongo_uri: str, mongo_db
) -> None:
    instance.add_dynamic_partitions(instagram_accounts.name, keys(30))
    outcome = evaluate(instance, mongo_uri, cap=10, recent_minutes=10)
    assert evicted(outcome) == set()
    assert len(remaining(instance)) == 30


@pytest.mark.parametrize("raw", ["twenty thousand", "-5"])
def test_a_bad_setting_is_a_clear_error(
    raw: str, instance: DagsterInstance, mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SETTING, raw)
    cap = {"partition_cap": build_resources()["partition_cap"]}
    with pytest.raises((DagsterError, ValueError)) as raised, build_dagster_resources(cap):
        pass
    assert SETTING in f"{raised.value} {raised.value.__cause__}"

    home = Path(instance.root_directory)
    cli = subprocess.run(
        [str(BIN / "ig-refresh"), "partitions", "cap"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "DAGSTER_HOME": str(home), SETTING: raw},
        timeout=120,
    )
    assert cli.returncode == 2
    assert f"ig-refresh partitions cap: {SETTING}:" in cli.stderr


def test_cli_reports_what_the_sensor_would_evict(
    tmp_path: Path, mongo_uri: str, mongo_db, redis_url_for_test: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(instagram_accounts.name, keys(12))
    env = {
        "PATH": os.environ["PATH"],
        "DAGSTER_HOME": str(home),
        "MONGODB_URI": mongo_uri,
        "REDIS_URL": redis_url_for_test,
        SETTING: "10",
    }
    cli = subprocess.run(
        [str(BIN / "ig-refresh"), "partitions", "cap"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    # Just added: the CLI shows the same protection the sensor applies.
    assert "12 account partitions, cap 10" in cli.stdout
    assert "evict 0 to get down to 9" in cli.stdout
    assert "dry run: nothing evicted" in cli.stdout
    with DagsterInstance.from_config(str(home)) as instance:
        assert len(instance.get_dynamic_partitions(instagram_accounts.name)) == 12


def scrape_job_for_cap_tests() -> JobDefinition:
    """Its own importable function: Dagster caches the job an ``execute_job`` pointer builds,
    so sharing ``scrape_only_refresh_job`` with another test module would share its store."""
    return scrape_only_refresh_job()


@pytest.fixture
def scrape_resources(
    monkeypatch: pytest.MonkeyPatch,
    mongo_uri: str,
    redis_url_for_test: str,
    redis_client,
    httpserver: HTTPServer,
) -> dict[str, Any]:
    """Instagram answers the scrape for @janedoe; Graph is not configured."""
    monkeypatch.setenv("TEST_MONGODB_URI", mongo_uri)
    monkeypatch.setenv("TEST_REDIS_URL", redis_url_for_test)
    monkeypatch.setenv("TEST_INSTAGRAM_URL", httpserver.url_for("").rstrip("/"))
    httpserver.expect_request(JSON_PATH).respond_with_json(web_profile_body("janedoe", 4242))
    url = httpserver.url_for("").rstrip("/")
    return job_resources(
        mongo_uri, redis_url_for_test, f"{url}/v21.0", url, token=None, scrape_hourly_budget=10
    )


def test_an_evicted_account_is_added_back_and_refreshed_by_a_sensor(
    instance: DagsterInstance, mongo_uri: str, mongo_db, scrape_resources
) -> None:
    account = seed_account(mongo_db, handle="janedoe")
    others = keys(10)
    instance.add_dynamic_partitions(instagram_accounts.name, [account, *others])
    first = run_refresh(account, scrape_resources, instance)
    assert first.success
    materialize(instance, *others)  # the account is now the one refreshed longest ago
    assert evicted(evaluate(instance, mongo_uri, cap=10)) == {account, others[0]}
    assert account not in remaining(instance)

    # A week later the freshness sensor finds it overdue and asks for its key back.
    week_ago = datetime.now(UTC) - timedelta(days=8)
    mongo_db["Account"].update_one({"handle": "janedoe"}, {"$set": {"lastDataRefresh": week_ago}})
    sensor_resources = {k: scrape_resources[k] for k in ("mongo", "instagram")}
    with build_sensor_context(instance=instance, resources=sensor_resources) as context:
        result = instagram_freshness_sensor(context)
    (request,) = [r for r in result.run_requests if r.partition_key == account]
    for add in result.dynamic_partitions_requests:  # what the daemon does, on the live set
        for key in add.partition_keys:
            if not instance.has_dynamic_partition(add.partitions_def_name, key):
                instance.add_dynamic_partitions(add.partitions_def_name, [key])
    assert account in remaining(instance)

    refreshed = run_refresh(account, scrape_resources, instance, tags=dict(request.tags))
    assert refreshed.success
    assert materializations(instance, account) == 2
    logs = mongo_db["DataRefreshLog"].find({"status": "COMPLETED"})
    assert {log["runId"] for log in logs} == {first.run_id, refreshed.run_id}


def test_a_reexecution_of_an_evicted_account_fails_until_its_key_is_back(
    instance: DagsterInstance, mongo_db, scrape_resources
) -> None:
    """Dagster runs a re-execution against its parent's partition and fails it when that key
    is gone. Run retries are covered by never evicting a key whose run will be retried; a
    re-execution by hand needs the key added back first (docs/scale.md)."""
    job = reconstructable(scrape_job_for_cap_tests)
    account = seed_account(mongo_db, handle="janedoe")
    instance.add_dynamic_partitions(instagram_accounts.name, [account])
    tags = {"dagster/partition": account}
    with execute_job(job, instance, tags=tags) as first:
        assert first.success
    instance.delete_dynamic_partition(instagram_accounts.name, account)

    options = ReexecutionOptions(parent_run_id=first.run_id)
    with execute_job(job, instance, tags=tags, reexecution_options=options) as again:
        assert not again.success
        errors = [e.step_failure_data.error for e in again.all_events if e.is_step_failure]
        assert errors and "Nonexistent partition keys" in errors[0].message

    instance.add_dynamic_partitions(instagram_accounts.name, [account])
    with execute_job(job, instance, tags=tags, reexecution_options=options) as third:
        assert third.success
