"""The whole product on real parts: a real `dagster-daemon` (sensor + queued run coordinator +
run subprocesses) against the embedded broker, valkey-server, litemongo and the HTTP Instagram
stand-in, with events published to Kafka exactly as the scheduler would."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from bson import ObjectId
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from ig_refresh_dagster.devstack.event_log import run_footprint
from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.devstack.seed import (
    DemoAccount,
    DemoEvent,
    demo_accounts,
    publish,
    seed_accounts,
)
from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster.refresh.run.warm_launcher import LAUNCHER_NAME, LAUNCHER_TAG
from ig_refresh_dagster.stores.cache import cache_key
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.daemon_helpers import daemon_env, dagster_home, launch_daemon
from ig_refresh_dagster_tests.support.kafka_helpers import read_topic, refresh_event

TOKEN = "e2e-token-do-not-log"
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
MAX_ROWS_PER_RUN = 30
TERMINAL = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def wait_for_runs(instance: DagsterInstance, count: int, deadline: float) -> list:
    while time.monotonic() < deadline:
        runs = instance.get_runs(RunsFilter(job_name="instagram_refresh_job"))
        if len(runs) >= count and all(r.status in TERMINAL for r in runs):
            return runs
        time.sleep(1)
    pytest.fail(f"runs did not finish: {[(r.tags, r.status) for r in runs]}")


def seed_demo(mongo_db, redis_client: redis.Redis, names: list[str]) -> list[DemoAccount]:
    """The named fixture accounts, seeded as never refreshed."""
    by_name = {a.username: a for a in demo_accounts()}
    chosen = [by_name[name] for name in names]
    seed_accounts(mongo_db, redis_client, chosen)
    return chosen


@pytest.mark.timeout(240)
def test_daemon_processes_published_events_end_to_end(
    tmp_path: Path,
    topics: Topics,
    redis_url_for_test: str,
    redis_client: redis.Redis,
    mongo_uri,
    mongo_db,
) -> None:
    home = dagster_home(tmp_path)
    chosen = seed_demo(mongo_db, redis_client, ["acme.studio", "sam.outdoors", "lena.fotografie"])
    missing = str(ObjectId())
    events = [
        DemoEvent(label=a.username, value=refresh_event(a.account_id), account_id=a.account_id)
        for a in chosen
    ]
    events += [
        DemoEvent(
            label="dup", value=refresh_event(chosen[0].account_id), account_id=chosen[0].account_id
        ),
        DemoEvent(label="missing", value=refresh_event(missing), account_id=missing),
        DemoEvent(label="bad", value=b"{broken"),
    ]
    publish(topics.bootstrap, topics.refresh, events)

    with InstagramStandin(token=TOKEN) as standin:
        daemon = launch_daemon(
            daemon_env(home, topics, redis_url_for_test, mongo_uri, standin),
            tmp_path / "daemon.log",
        )
        instance = DagsterInstance.from_config(str(home))
        try:
            runs = wait_for_runs(instance, 4, time.monotonic() + 180)
            rows = {r.run_id: run_footprint(instance, r.run_id).rows for r in runs}
        finally:
            exit_code = daemon.stop()
            instance.dispose()

    assert exit_code is not None
    assert len(runs) == 4, "three accounts + the missing one; the duplicate coalesced"
    status = {r.tags["dagster/partition"]: r.status for r in runs}
    assert status[missing] == DagsterRunStatus.FAILURE
    for run in runs:
        # Forked by the warm launcher; its event log within the budget (docs/production.md).
        assert run.tags[LAUNCHER_TAG] == LAUNCHER_NAME
        assert rows[run.run_id] <= MAX_ROWS_PER_RUN, rows
    for account in chosen:
        assert status[account.account_id] == DagsterRunStatus.SUCCESS
        doc = mongo_db["Account"].find_one({"_id": ObjectId(account.account_id)})
        assert doc["followerCount"] != account.before["followerCount"]
        assert doc["lastDataRefresh"] is not None
    logs = list(mongo_db["DataRefreshLog"].find({}))
    assert len(logs) == 4
    assert sorted(log["status"] for log in logs) == ["COMPLETED"] * 3 + ["FAILED"]
    assert {log["source"] for log in logs if log["status"] == "COMPLETED"} == {"graph", "scrape"}
    assert "acme" in redis_client.get(cache_key(chosen[0].cache_id)).decode()
    (dead,) = read_topic(topics.bootstrap, topics.dlq)
    assert dead.value == b"{broken"
    daemon_log = (tmp_path / "daemon.log").read_text()
    assert TOKEN not in daemon_log
