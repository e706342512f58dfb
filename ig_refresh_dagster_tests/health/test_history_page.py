"""The per-account follower history page the sidecar serves."""

from __future__ import annotations

from datetime import UTC, date, datetime

from bson import ObjectId

from ig_refresh_dagster.health.history_page import find_account, load_history, render_page
from ig_refresh_dagster.stores.history import ProfileHistoryStore

TODAY = date(2026, 11, 28)


def seed(db, handle: str, followers: list[int]) -> str:
    oid = ObjectId()
    db["Account"].insert_one({"_id": oid, "platform": "INSTAGRAM", "handle": handle})
    history = ProfileHistoryStore(db)
    for offset, count in enumerate(followers):
        day = datetime(2026, 11, 28 - len(followers) + 1 + offset, 12, tzinfo=UTC)
        history.record(str(oid), day, followers=count, following=5, media_count=9)
    return str(oid)


def test_account_is_found_by_handle_at_handle_or_id(mongo_db) -> None:
    account_id = seed(mongo_db, "acme.studio", [1])
    for key in ("acme.studio", "@acme.studio", account_id, account_id.upper()):
        found = find_account(mongo_db, key)
        assert found is not None and found.account_id == account_id, key
    assert find_account(mongo_db, "nobody") is None


def test_a_handle_is_looked_up_among_instagram_accounts_only(mongo_db) -> None:
    """Handles are per platform: another platform's account of that name is never shown."""
    mongo_db["Account"].insert_one({"platform": "YOUTUBE", "handle": "samename"})
    assert find_account(mongo_db, "samename") is None
    account_id = seed(mongo_db, "samename", [1])
    mongo_db["Account"].insert_one({"platform": "TIKTOK", "handle": "samename"})
    found = find_account(mongo_db, "@SameName")
    assert found is not None and found.account_id == account_id


def test_page_draws_one_point_per_day_and_lists_every_day(mongo_db) -> None:
    seed(mongo_db, "acme.studio", [100, 120, 90, 150])
    account, points = load_history(mongo_db, "acme.studio", days=30, today=TODAY)
    html = render_page(account, points, days=30)
    assert html.count("<circle") == 4
    assert "<polyline" in html
    assert "2026-11-25: 100 followers" in html and "2026-11-28: 150 followers" in html
    assert html.index("2026-11-28</td>") < html.index("2026-11-25</td>"), "newest row first"


def test_markup_in_a_handle_is_escaped(mongo_db) -> None:
    seed(mongo_db, "<script>alert(1)</script>", [1, 2])
    account, points = load_history(mongo_db, "<script>alert(1)</script>", days=7, today=TODAY)
    html = render_page(account, points, days=7)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_an_account_without_counts_says_so(mongo_db) -> None:
    oid = ObjectId()
    mongo_db["Account"].insert_one({"_id": oid, "platform": "INSTAGRAM", "handle": "quiet"})
    account, points = load_history(mongo_db, "quiet", days=7, today=TODAY)
    assert points == []
    assert "No follower counts recorded" in render_page(account, points, days=7)
