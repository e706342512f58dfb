"""The ``Account`` collection: load one account, write back only what a refresh changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ConfigDict

from ig_refresh_dagster.stores.snapshot import to_plain

COLLECTION = "Account"
# What ``mark_gone`` writes; a later successful refresh proves the account is back.
GONE_FIELDS = ("isGone", "goneAt")
REFRESHED_FIELDS = ("instagramData", "followerCount", "name", "description", "imageUrl")
# What the log's before/after and the cache merge carry.
SNAPSHOT_FIELDS = (*REFRESHED_FIELDS, "lastDataRefresh", "updatedAt")


class AccountNotFound(LookupError):
    pass


class AccountRecord(BaseModel):
    """What the refresh needs of an account; the rest of the document is never touched."""

    model_config = ConfigDict(frozen=True)

    id: str
    username: str | None
    cache_id: str | None
    last_refresh: datetime | None = None


class AccountUpdate(BaseModel):
    changed: list[str]
    before: dict[str, Any]
    after: dict[str, Any]


def username_of(doc: dict[str, Any]) -> str | None:
    for field in ("handle", "accountId"):
        value = doc.get(field)
        if isinstance(value, str) and value.strip().lstrip("@"):
            return value.strip().lstrip("@")
    return None


def as_utc(value: Any) -> datetime | None:
    """A stored time as aware UTC (MongoDB with ``tz_aware`` answers aware, litemongo naive)."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _snapshot(doc: dict[str, Any]) -> dict[str, Any]:
    return to_plain({f: doc[f] for f in SNAPSHOT_FIELDS if f in doc})


class AccountStore:
    def __init__(self, db: Any) -> None:
        self._coll = db[COLLECTION]

    def ensure_indexes(self) -> None:
        """Handle look-ups (the history page, backfill by handles) scan the collection
        without one: 3 s at 300k accounts on the embedded store (README, "Scale")."""
        self._coll.create_index("handle")

    def load(self, account_id: str) -> AccountRecord:
        doc = self._coll.find_one({"_id": ObjectId(account_id)})
        if doc is None:
            raise AccountNotFound(f"no Account with _id {account_id}")
        cache_id = doc.get("accountId")
        return AccountRecord(
            id=account_id,
            username=username_of(doc),
            cache_id=str(cache_id) if cache_id not in (None, "") else None,
            last_refresh=as_utc(doc.get("lastDataRefresh")),
        )

    def apply_refresh(
        self, account_id: str, fields: dict[str, Any], now: datetime
    ) -> AccountUpdate:
        """``$set`` the fields whose value differs; unknown values are simply absent from
        ``fields``, so they can never overwrite a known one with null or 0. The account was
        just read from Instagram, so a "gone" mark from an earlier 404 is removed."""
        doc = self._coll.find_one({"_id": ObjectId(account_id)})
        if doc is None:
            raise AccountNotFound(f"Account {account_id} disappeared during the refresh")
        updates: dict[str, Any] = {}
        for field, value in fields.items():
            if value is None:
                continue
            current = doc.get(field)
            if isinstance(value, dict) and isinstance(current, dict):
                for key, sub in value.items():
                    if sub is not None and current.get(key) != sub:
                        updates[f"{field}.{key}"] = sub
            elif current != value:
                updates[field] = value
        updates.update(lastDataRefresh=now, updatedAt=now)
        data = doc.get("instagramData")
        gone = [key for key in GONE_FIELDS if isinstance(data, dict) and key in data]
        unset = {f"instagramData.{key}": "" for key in gone}
        change: dict[str, Any] = {"$set": updates, **({"$unset": unset} if unset else {})}
        result = self._coll.update_one({"_id": ObjectId(account_id)}, change)
        if result.matched_count == 0:
            raise AccountNotFound(f"Account {account_id} disappeared during the refresh")
        after = self._coll.find_one({"_id": ObjectId(account_id)})
        changed = sorted(
            {k.split(".")[0] for k in (*updates, *unset)} - {"lastDataRefresh", "updatedAt"}
        )
        return AccountUpdate(
            changed=changed,
            before=_snapshot(doc),
            after=_snapshot(after),
        )

    def document(self, account_id: str) -> dict[str, Any] | None:
        """The raw document, for steps that need fields the refresh never passes around
        (the owner's token must not travel through Dagster's intermediate storage)."""
        return self._coll.find_one({"_id": ObjectId(account_id)})

    def mark_gone(self, account_id: str, now: datetime) -> None:
        """Instagram answered 404: say so on the account instead of retrying forever."""
        self._coll.update_one(
            {"_id": ObjectId(account_id)},
            {"$set": {"instagramData.isGone": True, "instagramData.goneAt": now, "updatedAt": now}},
        )
