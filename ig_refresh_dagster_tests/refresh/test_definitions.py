"""The code location as tests outside this repo see it: names, defaults, and secret handling."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dagster import (
    AssetKey,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    EnvVar,
    instance_for_test,
)

from ig_refresh_dagster import settings
from ig_refresh_dagster.definitions import build_resources
from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.run.refresh_runs import PROFILE
from ig_refresh_dagster.refresh.run.resources import NotConfigured
from ig_refresh_dagster.settings import SETTINGS, default


def test_external_names_are_as_documented() -> None:
    from ig_refresh_dagster import defs

    # Resolving the repository reads the current instance's definitions state; a fresh one
    # keeps the answer independent of instances earlier tests opened and closed.
    with instance_for_test():
        sensor = defs.resolve_sensor_def("instagram_refresh_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    job = defs.resolve_job_def("instagram_refresh_job")
    assert job.partitions_def == DynamicPartitionsDefinition(name="instagram_accounts")
    asset = defs.resolve_assets_def(AssetKey("instagram_profile"))
    assert asset.partitions_def.name == "instagram_accounts"
    assert asset.node_def.name == "instagram_profile", "one step per refresh (job.py)"
    checks = {key.name for key in asset.check_keys}
    assert checks == {"follower_jump", "profile_complete", "graph_enabled", "account_identity"}
    assert {"mongo", "redis", "kafka", "instagram"} <= set(defs.resources)


def test_only_the_refresh_asset_is_partitioned_by_account() -> None:
    """What lets ``housekeeping/refresh_runs.py`` know a refresh run by its partition: no other
    asset and no job of another asset runs for an account partition."""
    from ig_refresh_dagster import defs

    with instance_for_test():
        graph = defs.resolve_asset_graph()
        by_account = {
            key
            for key in graph.get_all_asset_keys()
            if graph.get(key).partitions_def == instagram_accounts
        }
        jobs = {
            job.name
            for job in defs.resolve_all_job_defs()
            if job.partitions_def == instagram_accounts
        }
    assert by_account == {PROFILE}
    assert jobs <= {"instagram_refresh_job", "__ASSET_JOB"}


def test_set_variables_reach_resources_as_env_vars_and_tokens_stay_out_of_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The UI shows a resource's config; a set variable must appear there by name only."""
    monkeypatch.setenv("INSTAGRAM_ACCESS_TOKEN", "EAAG-token-for-the-ui-test")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    resources = build_resources()
    token = resources["instagram"].access_token
    assert isinstance(token, EnvVar)
    assert token == "INSTAGRAM_ACCESS_TOKEN", "the config holds the variable's name, not its value"
    assert "EAAG-token-for-the-ui-test" not in repr(resources["instagram"])
    assert resources["kafka"].bootstrap_servers == EnvVar("KAFKA_BOOTSTRAP_SERVERS")


def test_workspace_loads_the_code_location() -> None:
    """What `dagster-webserver -w workspace.yaml` and the daemon do first."""
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-w",
            str(PROJECT_ROOT / "workspace.yaml"),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stdout + listing.stderr


@pytest.mark.parametrize("variable", ["MONGODB_URI", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"])
def test_unset_service_variable_is_a_clear_configuration_error(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the dev stack nothing falls back to a local store: each service must be named."""
    monkeypatch.delenv(variable, raising=False)
    resources = build_resources()
    use = {
        "MONGODB_URI": lambda: resources["mongo"].db(),
        "REDIS_URL": lambda: resources["redis"].client(),
        "KAFKA_BOOTSTRAP_SERVERS": lambda: resources["kafka"].reader(),
    }[variable]
    with pytest.raises(NotConfigured, match=f"{variable} is not set"):
        use()


def test_every_setting_is_in_the_configuration_table() -> None:
    page = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    table_rows = [line for line in page.splitlines() if line.startswith("| `")]
    documented = {row.split("`")[1] for row in table_rows}
    assert set(SETTINGS) <= documented, sorted(set(SETTINGS) - documented)


def test_every_default_lives_in_the_settings_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, resources carry exactly the table's defaults."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    resources = build_resources()
    assert resources["kafka"].topic == default("INSTAGRAM_REFRESH_TOPIC")
    assert resources["kafka"].dlq_topic == default("INSTAGRAM_REFRESH_DLQ_TOPIC")
    assert resources["mongo"].database == default("MONGODB_DATABASE")
    assert resources["instagram"].hourly_budget == default("INSTAGRAM_HOURLY_BUDGET")
    assert resources["instagram"].graph_api_url == default("INSTAGRAM_GRAPH_API_URL")
    assert HealthConfig().port == default("PORT")
    assert HealthConfig().host == default("HOST")


def test_budget_redis_falls_back_to_redis_url_shown_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unset, the budgets live in REDIS_URL's Redis; the UI names the variable that supplies the
    URL and never shows the URL itself (it may carry a password)."""
    monkeypatch.delenv("INSTAGRAM_BUDGET_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://:cache-s3cret@cache:6379/0")
    instagram = build_resources()["instagram"]
    assert instagram.budget_redis.url == EnvVar("REDIS_URL")
    assert "cache-s3cret" not in repr(instagram)
    assert settings.value("INSTAGRAM_BUDGET_REDIS_URL") == "redis://:cache-s3cret@cache:6379/0"

    monkeypatch.setenv("INSTAGRAM_BUDGET_REDIS_URL", "redis://:budget-s3cret@budget:6379/0")
    instagram = build_resources()["instagram"]
    assert instagram.budget_redis.url == EnvVar("INSTAGRAM_BUDGET_REDIS_URL")
    assert instagram.redis.url == EnvVar("REDIS_URL")
    assert settings.value("INSTAGRAM_BUDGET_REDIS_URL") == "redis://:budget-s3cret@budget:6379/0"


def test_budget_redis_with_neither_variable_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("INSTAGRAM_BUDGET_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(NotConfigured, match="INSTAGRAM_BUDGET_REDIS_URL is not set"):
        build_resources()["instagram"].scrape_budget()
