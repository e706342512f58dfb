"""Backfill by query from the launchpad job and from the CLI: the same selection, a dry run
that reports count, sample and ETA, and a launch that registers partitions and creates one
Dagster backfill of background runs. Also the budget share in real runs, and partition cleanup.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from bson import ObjectId
from dagster import (
    AssetKey,
    DagsterInstance,
    MetadataValue,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.snap import JobSnap
from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.cli import main
from ig_refresh_dagster.definitions import defs
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.launch.backfill import AccountBackfillConfig
from ig_refresh_dagster.refresh.launch.backfill_report import account_outcome, final_entry
from ig_refresh_dagster.refresh.launch.backfill_summary import backfill_summary_sensor
from ig_refresh_dagster.refresh.run.job import instagram_profile
from ig_refresh_dagster.refresh.run.tags import PRIORITY, SOURCE
from ig_refresh_dagster.stores.budget import HourlyBudget, graph_budget_name
from ig_refresh_dagster.stores.budget_share import BackgroundBudget
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore
from ig_refresh_dagster.stores.selection import AccountQuery
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    TOKEN,
    graph_body,
    real_defs,
    run_refresh,
    seed_account,
    web_profile_body,
)


@pytest.fixture
def seeded(mongo_db) -> dict[str, str]:
    old = datetime.now(UTC) - timedelta(days=40)
    recent = datetime.now(UTC) - timedelta(hours=1)
    return {
        "big.stale": seed_account(
            mongo_db, handle="big.stale", followerCount=90_000, lastDataRefresh=old
        ),
        "small.never": seed_account(mongo_db, handle="small.never", followerCount=20),
        "fresh": seed_account(
            mongo_db, handle="fresh", followerCount=5_000, lastDataRefresh=recent
        ),
    }


def launchpad(instance: DagsterInstance, resources: dict[str, Any], **config: Any):
    job = real_defs(resources).resolve_job_def("backfill_by_query")
    return job.execute_in_process(
        run_config={"ops": {"launch_account_backfill": {"config": config}}},
        instance=instance,
        raise_on_error=False,
    )


def targets(instance: DagsterInstance) -> tuple[Any, list[str]]:
    """The one backfill and the partitions it targets (read through Dagster's own model)."""
    (backfill,) = instance.get_backfills()
    data = backfill.get_asset_backfill_data(AssetGraph.from_assets([instagram_profile]))
    subset = data.target_subset.get_partitions_subset(AssetKey("instagram_profile"))
    return backfill, sorted(subset.get_partition_keys())


def test_launchpad_dry_run_reports_count_sample_and_eta_and_launches_nothing(
    instance: DagsterInstance, resources, seeded
) -> None:
    result = launchpad(instance, resources, stale_days=30, dry_run=True)

    assert result.success
    assert result.output_for_node("launch_account_backfill") == 2
    (metadata,) = [
        e.event_specific_data.metadata
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT"
    ]
    assert metadata["accounts"].value == 2
    assert metadata["sample"].value == "@small.never, @big.stale", "never refreshed first"
    assert metadata["eta"].value.startswith("now")
    assert instance.get_backfills() == []
    assert instance.get_dynamic_partitions(instagram_accounts.name) == []


def test_launchpad_launch_registers_partitions_and_creates_a_background_backfill(
    instance: DagsterInstance, resources, seeded
) -> None:
    result = launchpad(instance, resources, handles=["big.stale", "@fresh", "small.never"])

    assert result.success
    expected = sorted([seeded["big.stale"], seeded["small.never"]])
    assert sorted(instance.get_dynamic_partitions(instagram_accounts.name)) == expected
    backfill, partitions = targets(instance)
    assert partitions == expected, "fresh was refreshed an hour ago: its run would be skipped"
    assert backfill.tags[SOURCE] == "backfill"
    assert int(backfill.tags[PRIORITY]) < 0, "event runs keep the default priority 0"
    assert backfill.title.startswith("Instagram accounts: 3 listed")


def test_launchpad_refuses_an_invalid_selection_before_touching_partitions(
    instance: DagsterInstance, resources, seeded
) -> None:
    result = launchpad(instance, resources, ids=["acme.studio"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.user_failure_data.description
    assert error == "invalid selection: not account ids (24 hex digits): acme.studio"
    assert instance.get_dynamic_partitions(instagram_accounts.name) == []


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mongo_uri: str, redis_url_for_test: str
) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    for name, value in {
        "MONGODB_URI": mongo_uri,
        "REDIS_URL": redis_url_for_test,
        "DAGSTER_HOME": str(home),
        "INSTAGRAM_ACCESS_TOKEN": "",
        "INSTAGRAM_SCRAPE_HOURLY_BUDGET": "10",
    }.items():
        monkeypatch.setenv(name, value)
    return home


def test_cli_dry_run_prints_count_sample_and_eta_at_current_budgets(
    cli_env: Path, seeded, redis_client, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for _ in range(8):  # events used 8 of the 10 scrapes, a backfill 1: 1 is left
        HourlyBudget(redis_client, "scrape", 10).try_acquire()
    BackgroundBudget(HourlyBudget(redis_client, "scrape", 10), 50).try_acquire()
    listed = tmp_path / "handles.txt"
    listed.write_text(f"# from the spreadsheet\nbig.stale\n{seeded['small.never']}\nnobody\n")

    assert main(["backfill", "--handles-file", str(listed), "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert "2 accounts selected" in out
    assert "not found: @nobody" in out
    assert "sample: @small.never (20 followers, refreshed never), @big.stale (90,000" in out
    assert "ETA: about 12 min" in out, "1 admitted now, the other at 5 per hour"
    assert "scrape 1 free now (5/h share of 10/h, 9 used this hour)" in out
    assert "dry run: nothing launched" in out
    with instance_for_test(temp_dir=str(cli_env)) as instance:
        assert instance.get_backfills() == []


def test_cli_launch_creates_the_backfill_in_the_deployment_instance(
    cli_env: Path, seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backfill", "--stale-days", "30", "--followers-min", "1000"]) == 0
    assert "Runs → Backfills" in capsys.readouterr().out
    instance = DagsterInstance.from_config(str(cli_env))
    try:
        _, partitions = targets(instance)
        assert partitions == [seeded["big.stale"]]
    finally:
        instance.dispose()


def test_cli_rejects_ids_that_are_not_object_ids(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backfill", "--ids", "acme.studio"]) == 2
    assert "not account ids" in capsys.readouterr().err


def test_partitions_cleanup_removes_non_object_ids_and_deleted_accounts(
    cli_env: Path, seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    deleted = str(ObjectId())
    instance = DagsterInstance.from_config(str(cli_env))
    try:
        keys = [seeded["fresh"], deleted, "acme.studio", "6B0C" * 6]
        instance.add_dynamic_partitions(instagram_accounts.name, keys)

        assert main(["partitions", "cleanup", "--dry-run"]) == 0
        assert len(instance.get_dynamic_partitions(instagram_accounts.name)) == 4
        dry = capsys.readouterr().out
        assert "2 partition keys are not account ids: 'acme.studio', '6B0C" in dry
        assert f"1 name no existing Account: '{deleted}'" in dry

        assert main(["partitions", "cleanup"]) == 0
        assert instance.get_dynamic_partitions(instagram_accounts.name) == [seeded["fresh"]]
    finally:
        instance.dispose()


def test_background_runs_keep_to_their_share_while_event_runs_use_the_rest(
    mongo_db, resources, redis_client, instance: DagsterInstance, httpserver: HTTPServer
) -> None:
    """With Graph's backfill share used up, a backfill run scrapes; an event run still gets
    Graph (the events' reserve)."""
    graph = HourlyBudget(redis_client, graph_budget_name(token_fingerprint(TOKEN)), 200)
    for _ in range(100):  # the share: 50 % of the credential's default 200 calls per hour
        BackgroundBudget(graph, 50).try_acquire()
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(graph_body("natgeo"))
    httpserver.expect_request("/api/v1/users/web_profile_info/").respond_with_json(
        web_profile_body("natgeo")
    )
    sources = {}
    for source in ("backfill", "event"):
        account_id = seed_account(mongo_db, handle="natgeo")
        result = run_refresh(account_id, resources, instance, tags={SOURCE: source})
        (log,) = mongo_db["DataRefreshLog"].find({"runId": result.run_id})
        sources[source] = log["source"]
    assert sources == {"backfill": "scrape", "event": "graph"}


def test_launchpad_scaffolds_only_the_query_with_a_description_for_each_field() -> None:
    """What the launchpad opens with (GraphQL ``rootDefaultYaml``: every field with a default)
    for the code location's own definitions: the query, no resource configuration."""
    job = defs.resolve_job_def("backfill_by_query")
    snap = JobSnap.from_job_def(job)
    schema = snap.config_schema_snapshot
    root = schema.get_config_snap(snap.mode_def_snaps[0].root_config_key)

    scaffold = yaml.safe_load(default_values_yaml_from_type_snap(schema, root))

    assert scaffold == {
        "ops": {
            "launch_account_backfill": {
                "config": {"handles": [], "ids": [], "never_refreshed": False, "dry_run": False}
            }
        }
    }
    fields = AccountBackfillConfig.model_fields
    assert set(fields) == {*AccountQuery.model_fields, "handles", "dry_run"} - {"accounts"}
    assert all(f.description for f in fields.values())


def launched_by_cli(capsys: pytest.CaptureFixture[str], *criteria: str) -> str:
    assert main(["backfill", *criteria]) == 0
    return capsys.readouterr().out.split("backfill ")[-1].split()[0]


def test_backfill_status_and_report_show_each_account_from_its_run_and_refresh_log(
    cli_env: Path,
    seeded,
    resources,
    httpserver: HTTPServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    backfill_id = launched_by_cli(capsys, "--ids", seeded["big.stale"], seeded["small.never"])
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(
        graph_body("big.stale", followers=91_000)
    )
    instance = DagsterInstance.from_config(str(cli_env))
    try:
        run = run_refresh(
            seeded["big.stale"], resources, instance, tags={"dagster/backfill": backfill_id}
        )
        assert run.success
        assert main(["backfill", "status"]) == 0
        status = capsys.readouterr().out
        assert main(["backfill", "report", backfill_id, "--json", "-"]) == 0
        exported = json.loads(capsys.readouterr().out)
    finally:
        instance.dispose()

    assert f"backfill {backfill_id} (Instagram accounts: 2 listed)" in status
    assert "  COMPLETED         1\n  NOT_STARTED       1\n" in status
    assert "ETA for the 1 not started or running: now" in status
    assert f"page: /runs/b/{backfill_id}" in status
    rows = {row["handle"]: row for row in exported["accounts"]}
    assert rows["small.never"]["outcome"] == "NOT_STARTED"
    done = rows["big.stale"]
    assert (done["outcome"], done["method"], done["run_id"]) == ("COMPLETED", "graph", run.run_id)
    assert (done["followers_before"], done["followers_after"]) == (90_000, 91_000)
    assert done["refreshed_at"] is not None


def test_report_follows_a_deferral_to_the_run_that_adopted_it(mongo_db) -> None:
    """The deferred run's refresh goes on in the run that adopted it (``retriedBy``): the
    account's outcome is that run's, with whatever reason its writer gave, as written."""
    account = seed_account(mongo_db, handle="busy.bee")
    log = RefreshLogStore(mongo_db)
    now = datetime.now(UTC)
    log.defer("deferred-run", account, "fetch profile: wait", now, now, now, [])
    log.start("retry-run", account, now)
    assert log.adopt_deferrals("retry-run", account) == ["deferred-run"]
    log.fail("retry-run", account, "fetch profile: HTTP 404", now)
    mongo_db["DataRefreshLog"].update_one(
        {"runId": "retry-run"}, {"$set": {"reason": "handle_recycled"}}
    )

    entry = final_entry(log, log.for_run("deferred-run"))
    outcome = account_outcome(account, "busy.bee", entry)

    assert (outcome.outcome, outcome.run_id) == ("FAILED", "retry-run")
    assert outcome.reason == "handle_recycled; fetch profile: HTTP 404"


def test_backfill_report_refuses_unknown_backfills_and_a_report_without_a_file(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backfill", "status"]) == 1
    assert "this Dagster instance has no backfill" in capsys.readouterr().err
    assert main(["backfill", "report", "nosuchid", "--csv", "-"]) == 1
    assert "no backfill 'nosuchid'" in capsys.readouterr().err
    assert main(["backfill", "report", "nosuchid"]) == 2
    assert "--csv FILE and/or --json FILE" in capsys.readouterr().err


def test_summary_sensor_records_each_ended_backfill_once(
    instance: DagsterInstance, resources, seeded
) -> None:
    """The daemon's part (ending the backfill) is done here by hand; the end to end run is in
    test_backfill_daemon_e2e.py."""
    assert launchpad(instance, resources, handles=["big.stale"]).success
    (backfill,) = instance.get_backfills()

    def tick(cursor: str | None):
        context = build_sensor_context(
            instance=instance, cursor=cursor, resources={"mongo": resources["mongo"]}
        )
        return backfill_summary_sensor(context)

    running = tick(None)
    assert running.asset_events == [], "a backfill still running is not summarised"
    instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    ended = tick(running.cursor)
    (observation,) = ended.asset_events
    assert observation.asset_key == instagram_profile.key
    assert observation.metadata["not_started"] == MetadataValue.int(1)
    assert "| @big.stale | NOT_STARTED |" in observation.metadata["outcomes"].value
    assert observation.metadata["backfill"] == MetadataValue.url(f"/runs/b/{backfill.backfill_id}")
    assert tick(ended.cursor).asset_events == [], "summarised once"
