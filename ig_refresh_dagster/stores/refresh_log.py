"""``DataRefreshLog``: one entry per Dagster run, keyed by run id.

Every write is an upsert on ``runId``, so op retries and a re-executed step land on the same
entry instead of adding another one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from bson import ObjectId

COLLECTION = "DataRefreshLog"
PLATFORM = "INSTAGRAM"
RUN_ID_IS_STRING = {"runId": {"$type": "string"}}


def by_run(run_id: str) -> dict[str, Any]:
    """The filter for one run's entry. MongoDB's planner uses a partial index only for a query
    it can prove to be a subset of the index's filter, and it proves that for ``$exists`` but
    not for ``$type``: so the filter repeats the ``$type`` (``{runId: "x"}`` alone would scan
    the collection)."""
    return {"runId": {"$eq": run_id, **RUN_ID_IS_STRING["runId"]}}


def _identity(run_id: str, account_id: str, now: datetime) -> dict[str, Any]:
    """Written once, by whichever write creates the entry."""
    return {
        "runId": run_id,
        "accountId": ObjectId(account_id),
        "platform": PLATFORM,
        "startedAt": now,
    }


class RefreshLogStore:
    def __init__(self, db: Any) -> None:
        self._coll = db[COLLECTION]

    def ensure_indexes(self) -> None:
        """Unique among entries that have a run id: the old consumer's entries have none (and
        there are thousands), so a plain unique index could not be built at all."""
        self._coll.create_index("runId", unique=True, partialFilterExpression=RUN_ID_IS_STRING)

    def start(self, run_id: str, account_id: str, now: datetime) -> None:
        self._coll.update_one(
            by_run(run_id),
            {
                "$setOnInsert": _identity(run_id, account_id, now),
                "$set": {"status": "IN_PROGRESS"},
            },
            upsert=True,
        )

    def complete(
        self,
        run_id: str,
        source: Literal["graph", "scrape"],
        before: dict[str, Any],
        after: dict[str, Any],
        now: datetime,
        notes: list[str],
        insights: dict[str, Any] | None = None,
    ) -> None:
        self._coll.update_one(
            by_run(run_id),
            {
                "$set": {
                    "status": "COMPLETED",
                    "completedAt": now,
                    "source": source,
                    "dataSnapshot": {"before": before, "after": after},
                    "notes": notes,
                    "insights": insights,
                },
                "$unset": {"error": ""},
            },
        )

    def fail(self, run_id: str, account_id: str, error: str, now: datetime) -> None:
        """Upsert, because a run can fail before its start entry was written."""
        self._coll.update_one(
            by_run(run_id),
            {
                "$setOnInsert": _identity(run_id, account_id, now),
                "$set": {"status": "FAILED", "completedAt": now, "error": error},
            },
            upsert=True,
        )

    def for_run(self, run_id: str) -> dict[str, Any] | None:
        return self._coll.find_one(by_run(run_id))

    def close_open(self, run_id: str, account_id: str, error: str, now: datetime) -> bool:
        """FAILED for a run that ended without its steps saying so (crash, cancel); a no-op
        when the entry already has its final status. True when it wrote."""
        entry = self.for_run(run_id)
        if entry is not None and entry.get("status") in ("COMPLETED", "FAILED"):
            return False
        self.fail(run_id, account_id, error, now)
        return True
