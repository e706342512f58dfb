"""The budgets' durable record in MongoDB: every call a budget may admit, and every pause.

Redis decides admissions (one Lua script, one clock); this journal is what lets it decide
correctly again after it lost its memory (a restart without persistence, FLUSHALL, a failover
to a replica that lagged). A call is written here *before* Redis may admit it, so whatever
Redis lost is still here; a call Redis refused is deleted again (if that delete is lost, a
rebuilt window only counts one call too many, never one too few). Entries expire through a TTL
index once they can no longer matter; queries also filter on time, because MongoDB's TTL
monitor runs only once a minute. Writes use ``w: majority`` so a MongoDB failover keeps them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from pymongo import WriteConcern

COLLECTION = "InstagramBudgetJournal"


class JournalWindow(BaseModel):
    """What a budget must remember: the calls that may still count, and the longest pause."""

    calls: list[tuple[str, int]]  # (call id, reserved at, epoch ms)
    pause_until_ms: int = 0
    pause_reason: str = ""


def _date(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


class BudgetJournal:
    def __init__(self, db: Any) -> None:
        self._coll = db.get_collection(COLLECTION, write_concern=WriteConcern(w="majority"))

    def ensure_indexes(self) -> None:
        self._coll.create_index("expiresAt", expireAfterSeconds=0)

    def reserve(self, budget: str, call_id: str, at_ms: int, keep_ms: int) -> None:
        self._coll.insert_one(
            {
                "_id": call_id,
                "budget": budget,
                "kind": "call",
                "atMs": at_ms,
                "expiresMs": at_ms + keep_ms,
                "expiresAt": _date(at_ms + keep_ms),
            }
        )

    def release(self, call_id: str) -> None:
        self._coll.delete_one({"_id": call_id})

    def pause(self, budget: str, pause_id: str, until_ms: int, reason: str, keep_ms: int) -> None:
        self._coll.insert_one(
            {
                "_id": pause_id,
                "budget": budget,
                "kind": "pause",
                "untilMs": until_ms,
                "reason": reason,
                "expiresMs": until_ms + keep_ms,
                "expiresAt": _date(until_ms + keep_ms),
            }
        )

    def window(self, budget: str, now_ms: int, inherited: str | None = None) -> JournalWindow:
        """``budget``'s calls and longest pause, together with ``inherited``'s (a budget it
        replaces, whose recent calls still count against the same credential)."""
        names = [budget] if inherited is None else [budget, inherited]
        window = JournalWindow(calls=[])
        for doc in self._coll.find({"budget": {"$in": names}, "expiresMs": {"$gt": now_ms}}):
            if doc.get("kind") == "call":
                window.calls.append((str(doc["_id"]), int(doc["atMs"])))
            elif int(doc.get("untilMs", 0)) > window.pause_until_ms:
                window.pause_until_ms = int(doc["untilMs"])
                window.pause_reason = str(doc.get("reason", ""))
        return window
