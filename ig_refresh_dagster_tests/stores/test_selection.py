"""Choosing accounts by query (stores/selection.py) against litemongo: every criterion, their
combination, the order, and what is reported instead of silently dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from pydantic import ValidationError

from ig_refresh_dagster.stores.selection import AccountQuery, AccountSelector
from ig_refresh_dagster_tests.support.refresh_helpers import seed_account

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


@pytest.fixture
def accounts(mongo_db) -> dict[str, str]:
    """handle → id, with a spread of staleness and followers, a gone one and a TikTok one."""
    seeded = {
        "never.big": seed_account(mongo_db, handle="never.big", followerCount=90_000),
        "never.small": seed_account(mongo_db, handle="@Never.Small", followerCount=10),
        "old.big": seed_account(
            mongo_db, handle="old.big", followerCount=50_000, lastDataRefresh=days_ago(40)
        ),
        "old.small": seed_account(
            mongo_db, handle="old.small", followerCount=500, lastDataRefresh=days_ago(40)
        ),
        "older": seed_account(
            mongo_db, handle="older", followerCount=100, lastDataRefresh=days_ago(90)
        ),
        "fresh": seed_account(
            mongo_db, handle="fresh", followerCount=7_000, lastDataRefresh=days_ago(1)
        ),
        "gone": seed_account(
            mongo_db,
            handle="gone",
            followerCount=1_000,
            lastDataRefresh=days_ago(60),
            instagramData={"isGone": True},
        ),
        "by.cache.id": seed_account(mongo_db, accountId="by.cache.id", followerCount=3),
    }
    mongo_db["Account"].insert_one(
        {"_id": ObjectId(), "platform": "TIKTOK", "handle": "tiktoker", "followerCount": 1}
    )
    return seeded


def handles(mongo_db, **criteria) -> list[str]:
    selection = AccountSelector(mongo_db).select(AccountQuery(**criteria), NOW)
    return [a.handle for a in selection.accounts]


def test_stale_days_selects_not_refreshed_since_or_never_most_overdue_first(
    mongo_db, accounts
) -> None:
    assert handles(mongo_db, stale_days=30) == [
        "never.big",
        "Never.Small",
        "by.cache.id",
        "older",
        "old.big",
        "old.small",
    ]


def test_never_refreshed_and_follower_range(mongo_db, accounts) -> None:
    assert handles(mongo_db, never_refreshed=True) == ["never.big", "Never.Small", "by.cache.id"]
    assert handles(mongo_db, followers_min=500, followers_max=50_000) == [
        "old.big",
        "old.small",
        "fresh",
    ]


def test_criteria_combine_and_the_limit_keeps_the_most_overdue(mongo_db, accounts) -> None:
    assert handles(mongo_db, stale_days=30, followers_min=400) == [
        "never.big",
        "old.big",
        "old.small",
    ]
    assert handles(mongo_db, stale_days=30, limit=2) == ["never.big", "Never.Small"]


def test_failed_in_the_last_days_reads_the_refresh_log(mongo_db, accounts) -> None:
    log = mongo_db["DataRefreshLog"]
    for handle, status, when in [
        ("fresh", "FAILED", days_ago(2)),
        ("old.big", "FAILED", days_ago(20)),
        ("older", "COMPLETED", days_ago(1)),
    ]:
        log.insert_one(
            {
                "runId": handle,
                "accountId": ObjectId(accounts[handle]),
                "platform": "INSTAGRAM",
                "status": status,
                "completedAt": when,
            }
        )
    assert handles(mongo_db, failed_days=7) == ["fresh"]
    assert handles(mongo_db, failed_days=30) == ["old.big", "fresh"]


def test_a_list_mixes_handles_and_ids_matches_stored_case_or_at_sign_and_reports_misses(
    mongo_db, accounts
) -> None:
    missing = str(ObjectId())
    query = AccountQuery(
        accounts=["Never.Small", accounts["fresh"].upper(), "@BY.CACHE.ID", "no.such.handle"],
        ids=[accounts["gone"], missing],
    )
    selection = AccountSelector(mongo_db).select(query, NOW)
    assert sorted(a.handle for a in selection.accounts) == [
        "Never.Small",
        "by.cache.id",
        "fresh",
        "gone",
    ], "an explicit list includes accounts Instagram reported gone"
    assert selection.unmatched == [missing, "@no.such.handle"]


def test_queries_that_select_everything_or_name_bad_ids_are_refused() -> None:
    with pytest.raises(ValidationError, match="nothing selects every account"):
        AccountQuery()
    with pytest.raises(ValidationError, match="not account ids"):
        AccountQuery(ids=["acme.studio"])
    with pytest.raises(ValidationError, match="neither handles nor account ids"):
        AccountQuery(accounts=["no spaces allowed"])
    with pytest.raises(ValidationError, match="greater than"):
        AccountQuery(followers_min=10, followers_max=5)


def test_handles_for_a_tick_and_existing_ids(mongo_db, accounts) -> None:
    selector = AccountSelector(mongo_db)
    missing = str(ObjectId())
    assert selector.handles([accounts["old.big"], accounts["by.cache.id"], missing]) == {
        accounts["old.big"]: "old.big",
        accounts["by.cache.id"]: "by.cache.id",
    }
    assert selector.existing([accounts["fresh"], missing]) == {accounts["fresh"]}


def test_overdue_orders_by_staleness_then_followers_and_skips_gone_and_excluded(
    mongo_db, accounts
) -> None:
    overdue = AccountSelector(mongo_db).overdue(days_ago(7), 4, exclude=[accounts["never.big"]])
    assert [a.handle for a in overdue] == ["Never.Small", "by.cache.id", "older", "old.big"]
