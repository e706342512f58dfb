"""The per-account daily follower history: one document per account per UTC day."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from ig_refresh_dagster.stores.history import COLLECTION, HistoryPoint, ProfileHistoryStore

ACCOUNT = "665f1c2e9b1e8a0012345678"
OTHER = "665f1c2e9b1e8a0087654321"


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.fixture
def history(mongo_db) -> ProfileHistoryStore:
    store = ProfileHistoryStore(mongo_db)
    store.ensure_indexes()
    return store


def test_two_refreshes_on_one_day_keep_one_document_with_the_last_counts(
    history: ProfileHistoryStore, mongo_db
) -> None:
    history.record(ACCOUNT, at(27, 9), followers=100, following=10, media_count=5)
    history.record(ACCOUNT, at(27, 18), followers=110, following=None, media_count=6)
    docs = list(mongo_db[COLLECTION].find({"accountId": ObjectId(ACCOUNT)}))
    assert len(docs) == 1
    assert docs[0]["followers"] == 110
    assert docs[0]["following"] == 10, "an unknown count keeps the day's known one"
    assert docs[0]["mediaCount"] == 6


def test_series_is_per_account_oldest_first_within_the_window(
    history: ProfileHistoryStore,
) -> None:
    for day, followers in [(20, 90), (25, 100), (26, 105), (28, 120)]:
        history.record(ACCOUNT, at(day), followers=followers, following=1, media_count=1)
    history.record(OTHER, at(26), followers=999, following=1, media_count=1)
    series = history.series(ACCOUNT, days=7, today=date(2026, 11, 28))
    assert [p.day.day for p in series] == [25, 26, 28]
    assert [p.followers for p in series] == [100, 105, 120]
    assert all(isinstance(p, HistoryPoint) for p in series)


def test_unknown_counts_are_never_stored_as_zero(history: ProfileHistoryStore, mongo_db) -> None:
    history.record(ACCOUNT, at(27), followers=None, following=None, media_count=None)
    (doc,) = mongo_db[COLLECTION].find({})
    assert "followers" not in doc and "following" not in doc and "mediaCount" not in doc
    (point,) = history.series(ACCOUNT, days=1, today=date(2026, 11, 27))
    assert point.followers is None


def test_the_unique_index_refuses_a_second_document_for_the_same_day(
    history: ProfileHistoryStore, mongo_db
) -> None:
    history.record(ACCOUNT, at(27), followers=1, following=1, media_count=1)
    with pytest.raises(DuplicateKeyError):
        mongo_db[COLLECTION].insert_one({"accountId": ObjectId(ACCOUNT), "day": "2026-11-27"})


def test_a_rounded_count_never_replaces_the_days_exact_one(
    history: ProfileHistoryStore, mongo_db
) -> None:
    """Graph said 12,487 in the morning, the page "12.5K" in the evening: the day keeps
    12,487; a rounded count still fills a day without an exact one, flagged as such."""
    history.record(ACCOUNT, at(27, 9), followers=12_487, following=10, media_count=5)
    history.record(
        ACCOUNT, at(27, 18), 12_500, 11, 5, rounded=frozenset({"followers", "mediaCount"})
    )
    history.record(ACCOUNT, at(28), 12_500, None, None, rounded=frozenset({"followers"}))
    history.record(ACCOUNT, at(28, 20), 12_600, None, None, rounded=frozenset({"followers"}))
    first, second = mongo_db[COLLECTION].find({"accountId": ObjectId(ACCOUNT)}).sort("day", 1)
    assert (first["followers"], first["following"], first["mediaCount"]) == (12_487, 11, 5)
    assert first["countsExact"] == {"followers": True, "following": True, "mediaCount": True}
    assert second["followers"] == 12_600
    assert second["countsExact"] == {"followers": False}
    history.record(ACCOUNT, at(28, 21), followers=12_561, following=None, media_count=None)
    (point,) = history.series(ACCOUNT, days=1, today=date(2026, 11, 28))
    assert point.followers == 12_561, "an exact count replaces a rounded one"
