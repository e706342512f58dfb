"""``DataRefreshLog``: one entry per Dagster run, keyed by run id.

Every write is an upsert on ``runId`` that carries the entry's identity, so step retries land
on the same entry, and a run that fails before ``start`` still gets its own entry. While the run
is in progress the entry also holds its ``progress``: what the stages already did (the fetched
profile, the account update), so a retried attempt neither spends Instagram budget again nor
loses the account's "before" values. ``complete`` removes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from bson import ObjectId
from pydantic import BaseModel, ConfigDict

from ig_refresh_dagster.redaction import redact

COLLECTION = "DataRefreshLog"
PLATFORM = "INSTAGRAM"
IN_PROGRESS = "IN_PROGRESS"
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


# A run that had to wait for Instagram ends DEFERRED with ``reason``, ``retryAt`` and
# ``deferredSince`` (when its chain of deferrals began). The next run of the same account adopts
# every open deferral of it: the deferred entries get ``retriedBy`` (that run's id), the new one
# ``retryOf`` (their ids), so a refresh can be followed from entry to entry until it ends.
DEFERRED = "DEFERRED"
# Outcomes that no later error of the same run may turn FAILED.
ENDED = ("COMPLETED", "SKIPPED", DEFERRED)
# Outcomes a step retry of the same run never reopens.
FINAL = (*ENDED, "FAILED")


class DeferredRefresh(BaseModel):
    """An open deferral: the run that deferred, its account, and when it may run again."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    account_id: str
    retry_at: datetime
    reason: str


def as_utc(value: datetime) -> datetime:
    """pymongo (``tz_aware=True``) returns aware datetimes, litemongo naive UTC ones."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _not_retried_or_by(run_id: str) -> dict[str, Any]:
    return {"$or": [{"retriedBy": {"$exists": False}}, {"retriedBy": run_id}]}


class RefreshLogStore:
    def __init__(self, db: Any) -> None:
        self._coll = db[COLLECTION]

    def ensure_indexes(self) -> None:
        """Unique among entries that have a run id: the old consumer's entries have none (and
        there are thousands), so a plain unique index could not be built at all."""
        self._coll.create_index("runId", unique=True, partialFilterExpression=RUN_ID_IS_STRING)
        self._coll.create_index([("status", 1), ("retryAt", 1)])

    def start(self, run_id: str, account_id: str, now: datetime) -> str | None:
        """Opens the run's entry. Returns the status an earlier attempt of this run already
        ended it with (a step retried after a deferral, say), which stays: None when open."""
        found = self._coll.find_one(by_run(run_id), {"status": 1})
        if found is not None and found.get("status") in FINAL:
            return found["status"]
        self._coll.update_one(
            by_run(run_id),
            {
                "$setOnInsert": _identity(run_id, account_id, now),
                "$set": {"status": IN_PROGRESS},
            },
            upsert=True,
        )
        return None

    def defer(
        self,
        run_id: str,
        account_id: str,
        reason: str,
        retry_at: datetime,
        since: datetime,
        now: datetime,
        notes: list[str],
    ) -> None:
        """The run ends without refreshing; ``deferred_refresh_sensor`` runs it again after
        ``retry_at``. ``since`` is when this chain of deferrals began."""
        self._coll.update_one(
            by_run(run_id),
            {
                "$setOnInsert": _identity(run_id, account_id, now),
                "$set": {
                    "status": DEFERRED,
                    "completedAt": now,
                    "reason": reason,
                    "retryAt": retry_at,
                    "deferredSince": since,
                    "notes": [redact(note) for note in notes],
                },
                "$unset": {"error": ""},
            },
            upsert=True,
        )

    def save_progress(self, run_id: str, stage: str, value: dict[str, Any]) -> None:
        self._coll.update_one(by_run(run_id), {"$set": {f"progress.{stage}": value}})

    def progress(self, run_id: str) -> dict[str, Any]:
        """What earlier attempts of this run finished, by stage (empty on a first attempt)."""
        entry = self._coll.find_one(by_run(run_id), {"progress": 1})
        progress = (entry or {}).get("progress")
        return progress if isinstance(progress, dict) else {}

    def deferred_since(self, run_id: str) -> datetime | None:
        """When the chain of deferrals this run continues began (None: it continues none)."""
        entry = self._coll.find_one(by_run(run_id), {"deferredSince": 1})
        since = (entry or {}).get("deferredSince")
        return as_utc(since) if isinstance(since, datetime) else None

    def adopt_deferrals(self, run_id: str, account_id: str) -> list[str]:
        """Make this run the retry of every open deferral of its account (a retry requested by
        the sensor, or simply the next refresh the account gets): links both ways and carries
        the earliest ``deferredSince`` over. Returns the adopted run ids; idempotent."""
        candidates = list(
            self._coll.find(
                {
                    "accountId": ObjectId(account_id),
                    "status": DEFERRED,
                    "runId": {"$ne": run_id},
                    **_not_retried_or_by(run_id),
                },
                {"runId": 1, "deferredSince": 1, "startedAt": 1},
            )
        )
        adopted, since = [], []
        for entry in candidates:
            claimed = self._coll.update_one(
                {**by_run(entry["runId"]), **_not_retried_or_by(run_id)},
                {"$set": {"retriedBy": run_id}},
            )
            if claimed.matched_count:
                adopted.append(entry["runId"])
                began = entry.get("deferredSince") or entry.get("startedAt")
                if isinstance(began, datetime):
                    since.append(as_utc(began))
        if adopted:
            chain: dict[str, Any] = {"retryOf": adopted}
            if since:
                chain["deferredSince"] = min(since)
            self._coll.update_one(by_run(run_id), {"$set": chain})
        return adopted

    def due_deferrals(self, now: datetime, limit: int) -> list[DeferredRefresh]:
        """Open deferrals whose ``retryAt`` has passed, longest-waiting first."""
        entries = (
            self._coll.find(
                {"status": DEFERRED, "retryAt": {"$lte": now}, "retriedBy": {"$exists": False}}
            )
            .sort("retryAt", 1)
            .limit(limit)
        )
        return [
            DeferredRefresh(
                run_id=e["runId"],
                account_id=str(e["accountId"]),
                retry_at=as_utc(e["retryAt"]),
                reason=e.get("reason", ""),
            )
            for e in entries
        ]

    def deferred_accounts(self) -> set[str]:
        """Accounts with an open deferral, due or not (the ``status`` index answers it)."""
        open_deferrals = {"status": DEFERRED, "retriedBy": {"$exists": False}}
        return {str(e["accountId"]) for e in self._coll.find(open_deferrals, {"accountId": 1})}

    def retried_by(self, deferred_run_id: str) -> str | None:
        """The run that adopted this deferral, if one has."""
        entry = self._coll.find_one(by_run(deferred_run_id), {"retriedBy": 1})
        by = (entry or {}).get("retriedBy")
        return by if isinstance(by, str) else None

    def mark_retried(self, deferred_run_id: str, run_id: str) -> None:
        """Records a retry run that Dagster already has, so the deferral is no longer open."""
        self._coll.update_one(
            {**by_run(deferred_run_id), "retriedBy": {"$exists": False}},
            {"$set": {"retriedBy": run_id}},
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
            by_run(run_id),
            {
                "$setOnInsert": _identity(run_id, account_id, now),
                "$set": {
                    "status": "COMPLETED",
                    "completedAt": now,
                    "source": source,
                    "dataSnapshot": {"before": before, "after": after},
                    "notes": [redact(note) for note in notes],
                    "insights": insights,
                },
                "$unset": {"error": "", "progress": ""},
            },
            upsert=True,
        )

    def skip(self, run_id: str, reason: str, now: datetime) -> None:
        """The refresh was not needed (the entry exists: ``start`` wrote it)."""
        self._coll.update_one(
            {"runId": run_id},
            {"$set": {"status": "SKIPPED", "completedAt": now, "reason": reason}},
        )

    def fail(
        self, run_id: str, account_id: str, error: str, now: datetime, reason: str | None = None
    ) -> None:
        """Upsert, because a run can fail before its start entry was written. An error after
        the run ended its entry (a deferral, a completion) leaves that outcome standing.
        ``reason`` is the machine code of the cause when one is known (``handle_recycled``)."""
        failed = {"status": "FAILED", "completedAt": now, "error": redact(error)}
        failed |= {"reason": reason} if reason else {}
        written = self._coll.update_one(
            {**by_run(run_id), "status": {"$nin": list(ENDED)}}, {"$set": failed}
        )
        if not written.matched_count:
            self._coll.update_one(
                by_run(run_id),
                {"$setOnInsert": {**_identity(run_id, account_id, now), **failed}},
                upsert=True,
            )

    def for_run(self, run_id: str) -> dict[str, Any] | None:
        return self._coll.find_one(by_run(run_id))

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        """The status of each run's entry; runs without an entry are absent."""
        found = self._coll.find(
            {"runId": {"$in": run_ids, **RUN_ID_IS_STRING["runId"]}}, {"runId": 1, "status": 1}
        )
        return {doc["runId"]: doc.get("status", IN_PROGRESS) for doc in found}

    def entries(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each run's entry by run id (one indexed query); runs without an entry are absent."""
        found = self._coll.find({"runId": {"$in": run_ids, **RUN_ID_IS_STRING["runId"]}})
        return {doc["runId"]: doc for doc in found}

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
            by_run(run_id),
            {
                "$setOnInsert": _identity(run_id, account_id, now),
                "$set": {"status": status, "completedAt": now, "notes": [redact(detail)]},
            },
            upsert=True,
        )
        return True
