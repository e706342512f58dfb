"""Backfill by query from the launchpad job and from the CLI: the same selection, a dry run
that reports count, sample and ETA, and a launch that registers partitions and creates one
Dagster backfill of background runs. Also the budget share in real runs, and partition cleanup.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from dagster import AssetKey, DagsterInstance, instance_for_test
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.cli import main
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.job import instagram_profile
from ig_refresh_dagster.refresh.tags import PRIORITY, SOURCE
from ig_refresh_dagster.stores.budget import HourlyBudget, graph_budget_name
from ig_refresh_dagster.stores.budget_share import BackgroundBudget
from ig_refresh_dagster_tests.refresh_helpers import (
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
