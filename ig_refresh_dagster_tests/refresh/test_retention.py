"""Storage retention: old finished runs go with their events, DataRefreshLog stays, the asset
page tells the truth about pruned partitions, and gone or deleted accounts lose their partition.

Real refresh runs (litemongo, valkey-server, pytest-httpserver for Graph) on a temporary SQLite
instance; the cutoff is a moment between two runs, so no clock is faked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bson import ObjectId
from dagster import (
    AssetPartitionStatus,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    build_schedule_context,
)
from pytest_httpserver import HTTPServer

from ig_refresh_dagster import defs
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.housekeeping.retention import (
    PROFILE_ASSET,
    apply_retention,
    storage_retention_job,
    storage_retention_schedule,
)
from ig_refresh_dagster.refresh.run.job import instagram_refresh_job
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    job_resources,
    run_refresh,
    seed_account,
)

BIN = Path(sys.executable).parent


@pytest.fixture
def refresh(mongo_db, mongo_uri, redis_url_for_test, redis_client, httpserver: HTTPServer):
    """Refreshes a new account through the real job; returns (account id, run id)."""
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(graph_body("natgeo"))
    resources = job_resources(
        mongo_uri, redis_url_for_test, httpserver.url_for("/v21.0"), httpserver.url_for("")
    )

    def run(instance: DagsterInstance) -> tuple[str, str]:
        account_id = seed_account(mongo_db, handle="natgeo")
        result = run_refresh(account_id, resources, instance)
        assert result.success
        return account_id, result.run_id

    return run


def status(instance: DagsterInstance, *keys: str) -> dict[str, AssetPartitionStatus | None]:
    """What the asset page shows per partition (the same cached status it reads)."""
    found = instance.get_status_by_partition(PROFILE_ASSET, list(keys), instagram_accounts)
    return dict(found or {})


def test_old_runs_go_with_their_events_and_the_refresh_log_stays(
    instance, refresh, mongo_db
) -> None:
    old_account, old_run = refresh(instance)
    cutoff = datetime.now(UTC)
    new_account, new_run = refresh(instance)
    both = status(instance, old_account, new_account)
    assert set(both.values()) == {AssetPartitionStatus.MATERIALIZED}

    report = apply_retention(instance, mongo_db, older_than_days=0, now=cutoff)

    assert (report.runs, report.more_runs_left) == (1, False)
    assert instance.get_run_by_id(old_run) is None
    assert instance.all_logs(old_run) == []
    storage = Path(instance.storage_directory())
    assert not (storage / old_run).exists(), "the run's step outputs and logs go too"
    assert (storage / new_run).is_dir()
    assert instance.get_run_by_id(new_run).status == DagsterRunStatus.SUCCESS
    assert {log["runId"] for log in mongo_db["DataRefreshLog"].find({})} == {old_run, new_run}
    # The pruned account reads as not materialized: its last refresh is outside the window.
    assert status(instance, old_account, new_account) == {
        old_account: None,
        new_account: AssetPartitionStatus.MATERIALIZED,
    }


def test_dry_run_counts_and_deletes_nothing(instance, refresh, mongo_db) -> None:
    _, run_id = refresh(instance)
    gone = seed_account(mongo_db, instagramData={"isGone": True})
    instance.add_dynamic_partitions(instagram_accounts.name, [gone])

    report = apply_retention(instance, mongo_db, older_than_days=0, dry_run=True)

    assert (report.runs, report.archived) == (1, {"gone": 1})
    assert "would delete 1 finished run(s)" in report.summary()
    assert instance.get_run_by_id(run_id) is not None
    assert instance.has_dynamic_partition(instagram_accounts.name, gone)


def test_one_pass_deletes_at_most_max_runs_and_says_more_remain(
    instance, refresh, mongo_db
) -> None:
    for _ in range(3):
        refresh(instance)
    first = apply_retention(instance, mongo_db, older_than_days=0, max_runs=2)
    second = apply_retention(instance, mongo_db, older_than_days=0, max_runs=2)
    assert (first.runs, first.more_runs_left) == (2, True)
    assert (second.runs, second.more_runs_left) == (1, False)


def test_gone_and_deleted_accounts_lose_their_partition_unless_a_run_is_in_flight(
    instance, mongo_db
) -> None:
    active = seed_account(mongo_db, handle="still.here", instagramData={"isGone": False})
    gone = seed_account(mongo_db, handle="gone.account", instagramData={"isGone": True})
    deleted, in_flight = str(ObjectId()), str(ObjectId())
    instance.add_dynamic_partitions(instagram_accounts.name, [active, gone, deleted, in_flight])
    job = defs.resolve_job_def(instagram_refresh_job.name)
    instance.create_run_for_job(
        job_def=job, tags={"dagster/partition": in_flight}, status=DagsterRunStatus.STARTED
    )

    report = apply_retention(instance, mongo_db, older_than_days=30)

    assert report.archived == {"gone": 1, "deleted": 1}
    assert report.kept_active == 1
    assert sorted(instance.get_dynamic_partitions(instagram_accounts.name)) == sorted(
        [active, in_flight]
    )
    assert mongo_db["Account"].count_documents({}) == 2, "accounts themselves are not touched"


def test_schedule_is_off_by_default_and_passes_the_retention_setting(
    instance, mongo_db, mongo_uri, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert storage_retention_schedule.default_status == DefaultScheduleStatus.STOPPED
    assert defs.resolve_schedule_def(storage_retention_schedule.name)
    monkeypatch.setenv("RUN_RETENTION_DAYS", "7")
    request = storage_retention_schedule(build_schedule_context(instance=instance))
    config = request.run_config["ops"]["apply_storage_retention"]["config"]
    assert config["older_than_days"] == 7

    gone = seed_account(mongo_db, instagramData={"isGone": True})
    instance.add_dynamic_partitions(instagram_accounts.name, [gone])
    result = storage_retention_job.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        resources={"mongo": MongoResource(uri=mongo_uri)},
    )
    assert result.success
    assert instance.get_dynamic_partitions(instagram_accounts.name) == []


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ig-refresh"), "retention", *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        timeout=120,
    )


def test_cli_reports_what_it_would_prune_and_needs_mongodb(
    tmp_path: Path, mongo_db, mongo_uri
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    gone = seed_account(mongo_db, instagramData={"isGone": True})
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(instagram_accounts.name, [gone])

    dry = cli("--dry-run", env={"DAGSTER_HOME": str(home), "MONGODB_URI": mongo_uri})
    assert dry.returncode == 0, dry.stderr
    assert "would delete 0 finished run(s)" in dry.stdout
    assert "would archive 1 partition(s) (1 gone)" in dry.stdout

    real = cli("--older-than-days", "5", env={"DAGSTER_HOME": str(home), "MONGODB_URI": mongo_uri})
    assert real.returncode == 0, real.stderr
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions(instagram_accounts.name) == []

    missing = cli(env={"DAGSTER_HOME": str(home)})
    assert missing.returncode == 2
    assert "MONGODB_URI is not set" in missing.stdout
