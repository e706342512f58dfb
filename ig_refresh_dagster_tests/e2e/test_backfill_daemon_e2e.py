"""A backfill by query through the real daemon: `ig-refresh backfill` creates it, Dagster's
backfill daemon submits its runs, each run names its account, runs in process, and the backfill
completes as the Backfills page shows it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from bson import ObjectId
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.execution.backfill import BulkActionStatus

from ig_refresh_dagster.cli import main
from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.refresh.run.tags import HANDLE, PRIORITY, SOURCE
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.e2e.test_daemon_e2e import TOKEN, seed_demo
from ig_refresh_dagster_tests.support.daemon_helpers import daemon_env, dagster_home, launch_daemon


def wait_for_backfill(instance: DagsterInstance, backfill_id: str, deadline: float):
    while time.monotonic() < deadline:
        backfill = instance.get_backfill(backfill_id)
        if backfill.status != BulkActionStatus.REQUESTED:
            return backfill
        time.sleep(1)
    pytest.fail(f"backfill {backfill_id} still {backfill.status}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_backfill_by_query_runs_through_the_daemon_named_in_process_and_completes(
    tmp_path: Path,
    topics: Topics,
    redis_url_for_test: str,
    redis_client: redis.Redis,
    mongo_uri: str,
    mongo_db,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = dagster_home(tmp_path)
    names = ["bluebird.bakery", "sam.outdoors", "lena.fotografie"]
    chosen = seed_demo(mongo_db, redis_client, names)

    with InstagramStandin(token=TOKEN) as standin:
        env = daemon_env(home, topics, redis_url_for_test, mongo_uri, standin)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert main(["backfill", "--never-refreshed"]) == 0
        backfill_id = capsys.readouterr().out.split("backfill ")[-1].split()[0]
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
