"""Asset checks evaluated by every refresh: follower jump, partial profile, Graph disabled."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.instagram.models import InstagramProfile
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.run.checks import ASSET, JumpRule, follower_jump, profile_complete
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    graph_error,
    real_defs,
    run_refresh,
    seed_account,
    web_profile_body,
)

GRAPH_PATH = f"/v21.0/{BUSINESS_ID}"
JSON_PATH = "/api/v1/users/web_profile_info/"


def evaluations(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.mark.parametrize(
    ("before", "after", "passed"),
    [
        (10_000, 12_001, False),  # +20.01 % and +2,001: a jump
        (10_000, 7_000, False),  # a fall counts too
        (10_000, 11_900, True),  # +19 %: within the ratio
        (1_000, 1_900, True),  # +90 % but only +900: a small account's normal week
        (None, 5_000, True),  # nothing to compare with
        (0, 5_000, False),  # from zero, any large change is a jump
    ],
)
def test_follower_jump_needs_both_the_ratio_and_the_absolute_change(
    before: int | None, after: int, passed: bool
) -> None:
    result = follower_jump(before, after, JumpRule())
    assert result.passed is passed
    assert result.severity == AssetCheckSeverity.WARN or passed


def test_profile_complete_names_the_unknown_fields() -> None:
    profile = InstagramProfile(
        username="lena",
        followers_count=10,
        source="scrape",
        method="profile_html",
        fetched_at=datetime.now(UTC),
    )
    result = profile_complete(profile)
    assert not result.passed
    assert "follows_count" in result.description and "media_count" in result.description


def test_a_graph_refresh_passes_every_check(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(mongo_db, handle="natgeo", followerCount=1400)
    httpserver.expect_request(GRAPH_PATH).respond_with_json(graph_body("natgeo", 1500))
    result = run_refresh(account_id, resources, instance)
    assert result.success
    checks = evaluations(result)
    assert set(checks) == {"follower_jump", "profile_complete", "graph_enabled"}
    assert all(check.passed for check in checks.values())
    (point,) = mongo_db["InstagramProfileHistory"].find({})
    assert point["followers"] == 1500, "each refresh records the day's counts for the history"


def test_a_jump_and_a_dead_token_warn_in_the_run(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(mongo_db, handle="janedoe", followerCount=2_000)
    httpserver.expect_request(GRAPH_PATH).respond_with_json(
        graph_error(190, 467, "Invalid OAuth access token"), status=400
    )
    httpserver.expect_request(JSON_PATH).respond_with_json(web_profile_body("janedoe", 9_000))
    result = run_refresh(account_id, resources, instance)
    assert result.success, "checks warn; they never fail the refresh"
    checks = evaluations(result)
    assert not checks["follower_jump"].passed
    assert checks["follower_jump"].severity == AssetCheckSeverity.WARN
    assert checks["follower_jump"].metadata["change"].value == 7_000
    assert not checks["graph_enabled"].passed
    assert checks["graph_enabled"].severity == AssetCheckSeverity.WARN


def test_running_the_checks_without_the_refresh_says_how_to_evaluate_them(
    mongo_db, resources, instance, httpserver: HTTPServer
) -> None:
    """The UI's "Execute" on a check alone selects the checks without the asset: they judge what
    a refresh stored, so the run fails at once saying so, and nothing is fetched or written."""
    account_id = seed_account(mongo_db, handle="natgeo")
    instance.add_dynamic_partitions(instagram_accounts.name, [account_id])
    refresh_job = real_defs(resources).resolve_job_def("instagram_refresh_job")
    job = refresh_job.get_subset(
        asset_selection=set(),
        asset_check_selection={AssetCheckKey(AssetKey(ASSET), "graph_enabled")},
    )

    result = job.execute_in_process(
        partition_key=account_id, instance=instance, raise_on_error=False
    )

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"materialize {ASSET} for this account" in failure.step_failure_data.error.message
    assert httpserver.log == []
    assert list(mongo_db["DataRefreshLog"].find({})) == []


def test_a_recycled_handle_is_an_error_of_the_identity_check(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    """The refresh writes nothing and fails; the check still says why, as an ERROR."""
    account_id = seed_account(
        mongo_db, handle="natgeo", instagramData={"igGraphId": "17841400000000001"}
    )
    httpserver.expect_request(GRAPH_PATH).respond_with_json(graph_body("natgeo"))
    result = run_refresh(account_id, resources, instance)
    assert not result.success
    identity = evaluations(result)["account_identity"]
    assert not identity.passed
    assert identity.severity == AssetCheckSeverity.ERROR
    assert identity.metadata["reason"].value == "handle_recycled"
    assert "17841400000000099" in identity.metadata["seen_ids"].value
