"""``InstagramProfileHistory``: one document per account per UTC day with that day's counts.

The asset's materializations already carry the numbers, but Dagster's Plots view joins every
partition into one line; this collection is the per-account series the history chart and
analysts read. Each refresh upserts its day, so the last refresh of a day wins and a rerun never
adds a second document; the unique index makes a duplicate impossible even when two runs race.
Except for precision: a rounded count ("12.5K" from the profile page) never replaces an exact
one recorded the same day, so the day keeps its most precise value; ``countsExact`` says which
of a day's counts are exact (a count without a flag was recorded before flags existed).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ConfigDict

COLLECTION = "InstagramProfileHistory"
# Counts recorded per day; an unknown count (None) is left out, never stored as 0.
COUNTS = ("followers", "following", "mediaCount")


class HistoryPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    day: date
    followers: int | None = None
    following: int | None = None
    media_count: int | None = None


class ProfileHistoryStore:
    def __init__(self, db: Any) -> None:
        self._coll = db[COLLECTION]

    def ensure_indexes(self) -> None:
        self._coll.create_index([("accountId", 1), ("day", 1)], unique=True)

    def record(
        self,
        account_id: str,
        now: datetime,
        followers: int | None,
        following: int | None,
        media_count: int | None,
        rounded: frozenset[str] = frozenset(),
    ) -> None:
        """``rounded``: the counts (``COUNTS`` names) that were shown rounded."""
        counts = dict(zip(COUNTS, (followers, following, media_count), strict=True))
        known = {k: v for k, v in counts.items() if v is not None}
        day = {"accountId": ObjectId(account_id), "day": now.date().isoformat()}
        if rounded & known.keys():
            stored = self._coll.find_one(day) or {}
            flags = stored.get("countsExact") or {}
            exact_today = {k for k in COUNTS if k in stored and flags.get(k, True)}
            known = {k: v for k, v in known.items() if k not in rounded or k not in exact_today}
        exact = {f"countsExact.{k}": k not in rounded for k in known}
        self._coll.update_one(day, {"$set": {**known, **exact, "refreshedAt": now}}, upsert=True)

    def series(
        self, account_id: str, days: int, today: date, max_time_ms: int | None = None
    ) -> list[HistoryPoint]:
        """The account's points of the last ``days`` days up to ``today``, oldest first;
        ``max_time_ms`` bounds the query on the server."""
        since = (today - timedelta(days=days - 1)).isoformat()
        docs = self._coll.find(
            {"accountId": ObjectId(account_id), "day": {"$gte": since, "$lte": today.isoformat()}},
            max_time_ms=max_time_ms,
        ).sort("day", 1)
        return [
            HistoryPoint(
                day=date.fromisoformat(doc["day"]),
                followers=doc.get("followers"),
                following=doc.get("following"),
                media_count=doc.get("mediaCount"),
            )
            for doc in docs
        ]
