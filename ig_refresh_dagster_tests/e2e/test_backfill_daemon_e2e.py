"""A backfill by query through the real daemon: `ig-refresh backfill` creates it, Dagster's
backfill daemon submits its runs, each run names its account, runs in process, and the backfill
completes as the Backfills page shows it."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from bson import ObjectId
from dagster import DagsterInstance, DagsterRunStatus, MetadataValue, RunsFilter
from dagster._core.execution.backfill import BulkActionStatus

from ig_refresh_dagster.cli import main
from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.refresh.run.job import instagram_profile
from ig_refresh_dagster.refresh.run.tags import HANDLE, PRIORITY, SOURCE
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.e2e.test_daemon_e2e import TOKEN, seed_demo
from ig_refresh_dagster_tests.support.daemon_helpers import daemon_env, dagster_home, launch_daemon
from ig_refresh_dagster_tests.support.refresh_helpers import seed_account


def wait_for_backfill(instance: DagsterInstance, backfill_id: str, deadline: float):
    while time.monotonic() < deadline:
        backfill = instance.get_backfill(backfill_id)
        if backfill.status != BulkActionStatus.REQUESTED:
            return backfill
        time.sleep(1)
    pytest.fail(f"backfill {backfill_id} still {backfill.status}")


@pytest.fixture
def deployment(
    tmp_path: Path,
    topics: Topics,
    redis_url_for_test: str,
    mongo_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Path, dict[str, str]]]:
    """The Instagram stand-in running and the deployment's variables set, as the CLI and the
    daemon see them: (DAGSTER_HOME, the daemon's environment)."""
    home = dagster_home(tmp_path)
    with InstagramStandin(token=TOKEN) as standin:
        env = daemon_env(home, topics, redis_url_for_test, mongo_uri, standin)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield home, env


def backfill_never_refreshed(capsys: pytest.CaptureFixture[str]) -> str:
    """``ig-refresh backfill --never-refreshed``; returns the backfill id it prints."""
    assert main(["backfill", "--never-refreshed"]) == 0
    return capsys.readouterr().out.split("backfill ")[-1].split()[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_backfill_by_query_runs_through_the_daemon_named_in_process_and_completes(
    tmp_path: Path,
    deployment: tuple[Path, dict[str, str]],
    redis_client: redis.Redis,
    mongo_db,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home, env = deployment
    names = ["bluebird.bakery", "sam.outdoors", "lena.fotografie"]
    chosen = seed_demo(mongo_db, redis_client, names)

    backfill_id = backfill_never_refreshed(capsys)
    daemon = launch_daemon(env, tmp_path / "daemon.log")
    instance = DagsterInstance.from_config(str(home))
    try:
        backfill = wait_for_backfill(instance, backfill_id, time.monotonic() + 240)
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
        engine = [
            e.message
            for r in runs
            for e in instance.all_logs(r.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "ENGINE_EVENT"
        ]
    finally:
        daemon.stop()
        instance.dispose()

    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    assert sorted(r.tags[HANDLE] for r in runs) == sorted(a.username for a in chosen)
    assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
    for run in runs:
        assert run.tags[SOURCE] == "backfill"
        assert run.tags[PRIORITY] == "-1"
    assert sum("Executing steps in process" in m for m in engine) == len(chosen)
    for account in chosen:
        doc = mongo_db["Account"].find_one({"_id": ObjectId(account.account_id)})
        assert doc["lastDataRefresh"] is not None


def wait_for_summary(instance: DagsterInstance, backfill_id: str, deadline: float):
    """The observation ``backfill_summary_sensor`` records once the backfill has ended."""
    while time.monotonic() < deadline:
        for record in instance.fetch_observations(instagram_profile.key, limit=20).records:
            metadata = record.asset_observation.metadata
            if metadata.get("backfill_id") == MetadataValue.text(backfill_id):
                return metadata
        time.sleep(1)
    pytest.fail(f"no summary of backfill {backfill_id} on instagram_profile")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_backfill_report_counts_each_outcome_as_data_refresh_log_does(
    tmp_path: Path,
    deployment: tuple[Path, dict[str, str]],
    redis_client: redis.Redis,
    mongo_db,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Five never-refreshed accounts in one backfill by query, through the real daemon: one
    refreshes (COMPLETED), one is refreshed by someone else after the launch (SKIPPED as fresh),
    one is blocked by Instagram (DEFERRED), one Instagram does not know (gone: FAILED), one is
    deleted after the launch (not found: FAILED). ``status``, ``report`` (CSV read back with
    ``csv``, JSON) and the summary on the asset agree with ``DataRefreshLog``."""
    home, env = deployment
    refreshed, fresh, blocked = seed_demo(
        mongo_db, redis_client, ["bluebird.bakery", "lena.fotografie", "busy.bee"]
    )
    gone = seed_account(mongo_db, handle="vanished.page", followerCount=10)
    deleted = seed_account(mongo_db, handle="deleted.later", followerCount=20)

    backfill_id = backfill_never_refreshed(capsys)
    mongo_db["Account"].update_one(
        {"_id": ObjectId(fresh.account_id)}, {"$set": {"lastDataRefresh": datetime.now(UTC)}}
    )
    mongo_db["Account"].delete_one({"_id": ObjectId(deleted)})

    assert main(["backfill", "status"]) == 0, "the latest backfill"
    before = capsys.readouterr().out
    assert f"backfill {backfill_id} " in before
    assert "NOT_STARTED       5" in before
    assert "rate so far: none finished yet" in before
    assert "ETA for the 5 not started or running: now" in before

    daemon = launch_daemon(env, tmp_path / "daemon.log")
    instance = DagsterInstance.from_config(str(home))
    try:
        wait_for_backfill(instance, backfill_id, time.monotonic() + 300)
        summary = wait_for_summary(instance, backfill_id, time.monotonic() + 90)
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill_id}))
    finally:
        daemon.stop()
        instance.dispose()

    assert main(["backfill", "status", backfill_id]) == 0
    status = capsys.readouterr().out
    csv_path = tmp_path / "report.csv"
    assert main(["backfill", "report", backfill_id, "--csv", str(csv_path), "--json", "-"]) == 0
    exported = json.loads(capsys.readouterr().out)

    logged = Counter(
        e["status"]
        for e in mongo_db["DataRefreshLog"].find({"runId": {"$in": [r.run_id for r in runs]}})
    )
    assert logged == {"COMPLETED": 1, "SKIPPED": 1, "DEFERRED": 1, "FAILED": 2}
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = {row["account_id"]: row for row in csv.DictReader(handle)}
    assert Counter(r["outcome"] for r in rows.values()) == logged
    assert Counter(a["outcome"] for a in exported["accounts"]) == logged
    for outcome, count in logged.items():
        assert f"  {outcome:<12} {count:>6}" in status
        assert summary[outcome.lower()].value == count
    assert "rate so far: " in status and "accounts/h" in status

    done = rows[refreshed.account_id]
    assert (done["handle"], done["method"], done["followers_before"]) == (
        "bluebird.bakery",
        "graph",
        "9120",
    )
    assert int(done["followers_after"]) > 0 and done["refreshed_at"]
    assert rows[fresh.account_id]["reason"], "SKIPPED says why"
    waiting = rows[blocked.account_id]
    assert waiting["outcome"] == "DEFERRED" and waiting["retry_at"] and waiting["reason"]
    assert rows[gone]["outcome"] == "FAILED" and rows[gone]["reason"]
    assert rows[deleted]["outcome"] == "FAILED" and "no Account" in rows[deleted]["reason"]
    assert rows[deleted]["handle"] == "", "the Account is gone: no handle is guessed"
    table = summary["outcomes"].value
    assert "| @busy.bee | DEFERRED |" in table and "| @bluebird.bakery | COMPLETED |" in table
    assert summary["backfill"].value == f"/runs/b/{backfill_id}"
    print(status, table, sep="\n")
