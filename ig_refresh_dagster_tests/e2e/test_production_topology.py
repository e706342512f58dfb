"""The production topology on one machine: PostgreSQL instance storage, a separate gRPC code
server, the daemon and the webserver each in its own process, loading the code location the
way a cluster does (`deploy/dagster-postgres.yaml`, `deploy/workspace-grpc.yaml`).

Only the code server (and the run workers it starts) gets the pipeline's settings and secrets;
the daemon and the webserver get `DAGSTER_HOME` and the PostgreSQL variables alone, as in the
Helm deployment. Kafka, Redis, MongoDB and Instagram are the suite's embedded stand-ins.
40 events for 40 accounts go through the topic; then retention runs against the same
instance. Skipped, with the reason, where no PostgreSQL answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml
from bson import ObjectId
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from ig_refresh_dagster.devstack.event_log import run_footprint
from ig_refresh_dagster.devstack.instagram_standin import DEFAULT_FIXTURES, InstagramStandin
from ig_refresh_dagster.devstack.services import (
    ServiceProcess,
    free_port,
    kafka_bootstrap,
    redis_url,
)
from ig_refresh_dagster.devstack.stack import EMBEDDED_BROKER_FETCH_WAIT_MS, PROJECT_ROOT
from ig_refresh_dagster.refresh.housekeeping.dead_runs import GRPC_INFO_TAG
from ig_refresh_dagster.refresh.run.warm_launcher import LAUNCHER_TAG
from ig_refresh_dagster.stores.mongo import litemongo_uri, open_client
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.kafka_helpers import refresh_event
from ig_refresh_dagster_tests.support.postgres_helpers import (
    count_event_rows,
    fresh_database,
    instance_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

EVENTS = 40  # 100 until issue 16; each is a spawned run here, and 40 prove the same
TOKEN = "topology-token-do-not-log"
BUSINESS_ID = "17841400000000000"
BIN = Path(sys.executable).parent
JOB = "instagram_refresh_job"
TERMINAL = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
# Rows one daemon-launched refresh run writes to the event log, DEBUG included (docs/production.md,
# "Bounded storage"). Measured: 28, 33 KiB, with the refresh as one step (88 with seven steps,
# 110 before the instance yamls dropped DEBUG log lines), before the account_identity check
# added two rows (planned, and Dagster's line that it was not yielded). The bound is 30.
MAX_EVENT_ROWS_PER_REFRESH = 30
# Test-only tuning, in the instance yaml: submit the tick's 100 run requests in parallel.
TUNING = {"sensors": {"num_submit_workers": 4}}


@dataclass
class Topology:
    instance: DagsterInstance
    database: str
    db: Any
    accounts: list[str]
    run_ids: list[str]
    webserver: str
    env: dict[str, str]
    logs: Path


def write_instance(home: Path) -> None:
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster-postgres.yaml").read_text())
    for section, values in TUNING.items():
        config[section] = {**config.get(section, {}), **values}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def write_fixtures(directory: Path, usernames: list[str]) -> None:
    """The stand-in's Graph answer for each account: a copy of a demo fixture, renamed."""
    spec = json.loads((DEFAULT_FIXTURES / "acme.studio" / "graph.json").read_text())
    for i, username in enumerate(usernames):
        spec["json"]["business_discovery"].update(username=username, followers_count=1000 + i)
        (directory / username).mkdir(parents=True)
        (directory / username / "graph.json").write_text(json.dumps(spec))


def wait_for_runs(instance: DagsterInstance, count: int, logs: Path, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(RunsFilter(job_name=JOB))
        if len(runs) >= count and all(r.status in TERMINAL for r in runs):
            return runs
        time.sleep(2)
    tail = (logs / "dagster-daemon.log").read_text()[-3000:]
    pytest.fail(f"{len(runs)} runs, not all finished, after {timeout}s; daemon log:\n{tail}")


def graphql(base: str, query: str) -> dict[str, Any]:
    response = requests.post(f"{base}/graphql", json={"query": query}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory, kafka_broker, redis_server
) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("topology")
    home, logs = tmp / "dagster_home", tmp / "logs"
    home.mkdir()
    logs.mkdir()
    usernames = [f"creator.{i:03d}" for i in range(EVENTS)]
    write_fixtures(tmp / "fixtures", usernames)
    mongo_uri = litemongo_uri(tmp / "mongo")
    client = open_client(mongo_uri)
    db = client["ratecreator"]
    accounts = []
    for username in usernames:
        oid = ObjectId()
        db["Account"].insert_one({"_id": oid, "platform": "INSTAGRAM", "handle": username})
        accounts.append(str(oid))
    redis.Redis.from_url(redis_url(redis_server)).flushall()
    topics = Topics(kafka_bootstrap(kafka_broker))
    topics.create(topics.refresh, 3)
    topics.create(topics.dlq, 1)

    with (
        fresh_database() as database,
        pytest.MonkeyPatch.context() as monkeypatch,
        contextlib.ExitStack() as stack,
    ):
        write_instance(home)
        control_env = {
            "PATH": f"{BIN}:/usr/bin:/bin",
            "DAGSTER_HOME": str(home),
            **instance_env(database),
        }
        standin = stack.enter_context(InstagramStandin(token=TOKEN, fixtures_dir=tmp / "fixtures"))
        code_port, web_port = free_port(), free_port()
        code_env = {
            **control_env,
            "KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap,
            "KAFKA_FETCH_WAIT_MAX_MS": EMBEDDED_BROKER_FETCH_WAIT_MS,
            "INSTAGRAM_REFRESH_TOPIC": topics.refresh,
            "INSTAGRAM_REFRESH_DLQ_TOPIC": topics.dlq,
            "REDIS_URL": redis_url(redis_server),
            "MONGODB_URI": mongo_uri,
            "INSTAGRAM_GRAPH_API_URL": standin.graph_url,
            "INSTAGRAM_WEB_URL": standin.web_url,
            "INSTAGRAM_ACCESS_TOKEN": TOKEN,
            "INSTAGRAM_BUSINESS_ACCOUNT_ID": BUSINESS_ID,
        }
        workspace = str(PROJECT_ROOT / "deploy" / "workspace-grpc.yaml")
        control_env.update(
            DAGSTER_CODE_SERVER_HOST="127.0.0.1", DAGSTER_CODE_SERVER_PORT=str(code_port)
        )

        def start(name: str, argv: list[str], port: int | None, env: dict[str, str]) -> None:
            process = ServiceProcess(
                name, argv, port, logs / f"{name}.log", env=env, cwd=tmp, start_timeout=120
            )
            stack.callback(process.stop)

        code_server = ["code-server", "start", "-h", "127.0.0.1", "-p", str(code_port)]
        code_server += ["-m", "ig_refresh_dagster", "-a", "defs"]
        start("code-server", [str(BIN / "dagster"), *code_server], code_port, code_env)
        daemon = [str(BIN / "dagster-daemon"), "run", "-w", workspace]
        start("dagster-daemon", daemon, None, control_env)
        webserver = [str(BIN / "dagster-webserver"), "-w", workspace]
        webserver += ["-h", "127.0.0.1", "-p", str(web_port)]
        start("dagster-webserver", webserver, web_port, control_env)
        topics.publish([refresh_event(account) for account in accounts])

        for key, value in control_env.items():
            monkeypatch.setenv(key, value)
        instance = DagsterInstance.from_config(str(home))
        stack.callback(instance.dispose)
        runs = wait_for_runs(instance, EVENTS, logs, timeout=1500)
        yield Topology(
            instance=instance,
            database=database,
            db=db,
            accounts=accounts,
            run_ids=[r.run_id for r in runs],
            webserver=f"http://127.0.0.1:{web_port}",
            env={**control_env, "MONGODB_URI": mongo_uri},
            logs=logs,
        )
    client.close()


def test_every_event_is_one_completed_refresh_with_exactly_one_log(topology: Topology) -> None:
    runs = [topology.instance.get_run_by_id(run_id) for run_id in topology.run_ids]
    assert len(runs) == EVENTS
    assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(topology.accounts)
    # The warm launcher never forks a run whose code server it did not start: the separate code
    # server alone holds the secrets, so it starts every run here.
    assert not any(LAUNCHER_TAG in r.tags for r in runs)
    assert all(GRPC_INFO_TAG in r.tags for r in runs)
    logs = list(topology.db["DataRefreshLog"].find({}))
    assert sorted(log["runId"] for log in logs) == sorted(topology.run_ids)
    assert {log["status"] for log in logs} == {"COMPLETED"}
    assert topology.db["Account"].count_documents({"followerCount": {"$gte": 1000}}) == EVENTS
    for name in ("code-server", "dagster-daemon", "dagster-webserver"):
        assert TOKEN not in (topology.logs / f"{name}.log").read_text(), name


def test_each_refresh_stays_within_the_event_log_row_bound(topology: Topology) -> None:
    footprints = {run_id: run_footprint(topology.instance, run_id) for run_id in topology.run_ids}
    worst = max(footprints.values(), key=lambda f: f.rows)
    assert worst.rows <= MAX_EVENT_ROWS_PER_REFRESH, worst.model_dump()
    assert "log line (DEBUG)" not in worst.by_kind, worst.model_dump()
    # The public API's count is the event_logs table's own.
    run_id = topology.run_ids[0]
    assert count_event_rows(topology.database, run_id) == footprints[run_id].rows


def test_webserver_reads_runs_and_partitions_from_postgres_through_the_code_server(
    topology: Topology,
) -> None:
    data = graphql(
        topology.webserver,
        '{ runsOrError(filter: {pipelineName: "instagram_refresh_job", statuses: [SUCCESS]})'
        " { ... on Runs { count } } }",
    )
    assert data["runsOrError"]["count"] == EVENTS
    assert sorted(partition_statuses(topology)["materializedPartitions"]) == sorted(
        topology.accounts
    )


def partition_statuses(topology: Topology) -> dict[str, list[str]]:
    data = graphql(
        topology.webserver,
        '{ assetNodeOrError(assetKey: {path: ["instagram_profile"]}) { ... on AssetNode {'
        " assetPartitionStatuses { ... on DefaultPartitionStatuses {"
        " materializedPartitions unmaterializedPartitions } } } } }",
    )
    return data["assetNodeOrError"]["assetPartitionStatuses"]


def test_retention_prunes_runs_and_archives_gone_accounts_on_postgres(
    topology: Topology,
) -> None:
    """Runs last: it deletes what the tests above read."""
    gone, deleted = topology.accounts[:5], topology.accounts[5:10]
    topology.db["Account"].update_many(
        {"_id": {"$in": [ObjectId(a) for a in gone]}}, {"$set": {"instagramData.isGone": True}}
    )
    topology.db["Account"].delete_many({"_id": {"$in": [ObjectId(a) for a in deleted]}})

    result = subprocess.run(
        [str(BIN / "ig-refresh"), "retention", "--older-than-days", "0"],
        capture_output=True,
        text=True,
        env={**topology.env, "PATH": os.environ["PATH"]},
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deleted {EVENTS} finished run(s)" in result.stdout
    assert "archived 10 partition(s) (5 deleted, 5 gone)" in result.stdout
    assert all(topology.instance.get_run_by_id(r) is None for r in topology.run_ids)
    assert count_event_rows(topology.database, topology.run_ids[0]) == 0
    assert topology.db["DataRefreshLog"].count_documents({}) == EVENTS
    statuses = partition_statuses(topology)
    assert statuses["materializedPartitions"] == []
    assert sorted(statuses["unmaterializedPartitions"]) == sorted(topology.accounts[10:])
