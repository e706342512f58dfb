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
        self._coll.create_index("runId", unique=True)

    def start(self, run_id: str, account_id: str, now: datetime) -> None:
        self._coll.update_one(
            {"runId": run_id},
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
            {"runId": run_id},
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

    def skip(self, run_id: str, reason: str, now: datetime) -> None:
        """The refresh was not needed (the entry exists: ``start`` wrote it)."""
        self._coll.update_one(
            {"runId": run_id},
            {"$set": {"status": "SKIPPED", "completedAt": now, "reason": reason}},
        )

    def fail(self, run_id: str, account_id: str, error: str, now: datetime) -> None:
        """Upsert, because a run can fail before its start entry was written."""
        self._coll.update_one(
            {"runId": run_id},
            {
                "$setOnInsert": _identity(run_id, account_id, now),
                "$set": {"status": "FAILED", "completedAt": now, "error": error},
            },
            upsert=True,
        )

    def for_run(self, run_id: str) -> dict[str, Any] | None:
        return self._coll.find_one({"runId": run_id})

    def close_open(self, run_id: str, account_id: str, error: str, now: datetime) -> bool:
        """FAILED for a run that ended without its steps saying so (crash, cancel); a no-op
        when the entry already has its final status. True when it wrote."""
        entry = self.for_run(run_id)
        if entry is not None and entry.get("status") in ("COMPLETED", "FAILED"):
            return False
        self.fail(run_id, account_id, error, now)
        return True
