"""``DataRefreshLog``: one entry per Dagster run, keyed by run id.

Every write is an upsert on ``runId`` that carries the entry's identity, so op retries land on
the same entry, and a re-execution that skips ``load_account`` (which writes ``start``) still
gets its own entry from whichever write comes first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from bson import ObjectId

COLLECTION = "DataRefreshLog"
PLATFORM = "INSTAGRAM"
IN_PROGRESS = "IN_PROGRESS"


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
                "$set": {"status": IN_PROGRESS},
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
        *,
        account_id: str,
    ) -> None:
        self._coll.update_one(
            {"runId": run_id},
            {
                "$setOnInsert": _identity(run_id, account_id, now),
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
            upsert=True,
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

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        """The status of each run's entry; runs without an entry are absent."""
        found = self._coll.find({"runId": {"$in": run_ids}}, {"runId": 1, "status": 1})
        return {doc["runId"]: doc.get("status", IN_PROGRESS) for doc in found}

    def close_open(
        self,
        run_id: str,
        account_id: str,
        status: Literal["COMPLETED", "FAILED"],
        detail: str,
        now: datetime,
    ) -> bool:
        """Gives the entry of a run that ended without its steps saying so (crash, cancel, a
        store outage at the end) the run's real outcome. Only a missing or ``IN_PROGRESS``
        entry is written: whatever final status the run wrote itself is kept. True when it
        wrote."""
        entry = self.for_run(run_id)
        if entry is not None and entry.get("status", IN_PROGRESS) != IN_PROGRESS:
            return False
        if status == "FAILED":
            self.fail(run_id, account_id, detail, now)
            return True
        self._coll.update_one(
            {"runId": run_id},
            {
                "$setOnInsert": _identity(run_id, account_id, now),
                "$set": {"status": status, "completedAt": now, "notes": [detail]},
            },
            upsert=True,
        )
        return True
