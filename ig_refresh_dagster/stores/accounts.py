"""The ``Account`` collection: load one account, write back only what a refresh changed.

What a refresh writes, and what it never does, is in README "Data we write". Two rules live
here because they need the stored document: a rounded count (``count_steps``) that agrees with
the stored one keeps the stored one, and Instagram's user ids (``ID_FIELDS``) are written once
and then only compared.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ConfigDict

from ig_refresh_dagster.stores.snapshot import to_plain

COLLECTION = "Account"
# What ``mark_gone`` writes; a later successful refresh proves the account is back.
GONE_FIELDS = ("isGone", "goneAt")
# Instagram's ids of the account, by numbering (``InstagramProfile.user_ids``).
ID_FIELDS = ("igUserId", "igGraphId")
# What ``mark_recycled`` writes: the handle now answers as another user (README "Data we write").
RECYCLED_FIELD = "handleRecycled"
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
    # Instagram's ids of this account as first seen (``ID_FIELDS``).
    user_ids: dict[str, str] = {}


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


def _user_ids(doc: dict[str, Any]) -> dict[str, str]:
    data = doc.get("instagramData")
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in ID_FIELDS if isinstance(data.get(key), str)}


def _keep_agreeing(
    doc: dict[str, Any], fields: dict[str, Any], rounded: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """``fields`` without the rounded counts that agree with the stored count (within one
    step of the shown value): "12.5K" never replaces 12,487, nor its precision flag. The
    flags of counts not written stay as stored."""
    data = doc.get("instagramData")
    new = fields.get("instagramData")
    if not isinstance(new, dict):
        return fields
    data = data if isinstance(data, dict) else {}
    new, exact = dict(new), dict(new.get("countsExact") or {})
    kept = [
        key
        for key, (shown, step) in rounded.items()
        if isinstance(data.get(key), int) and abs(data[key] - shown) <= step
    ]
    for key in kept:
        new.pop(key, None)
        exact.pop(key, None)
    stored = data.get("countsExact")
    new.pop("countsExact", None)
    if exact:
        new["countsExact"] = {**(stored if isinstance(stored, dict) else {}), **exact}
    out = {**fields, "instagramData": new}
    if "followers" in kept:
        out.pop("followerCount", None)
    return out


def _snapshot(doc: dict[str, Any]) -> dict[str, Any]:
    return to_plain({f: doc[f] for f in SNAPSHOT_FIELDS if f in doc})


class AccountStore:
    def __init__(self, db: Any) -> None:
        self._coll = db[COLLECTION]

    def ensure_indexes(self) -> None:
        """Handle look-ups (the history page, backfill by handles) scan the collection
        without one: 3 s at 300k accounts on the embedded store (docs/scale.md)."""
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
            user_ids=_user_ids(doc),
        )

    def apply_refresh(
        self,
        account_id: str,
        fields: dict[str, Any],
        now: datetime,
        rounded: dict[str, tuple[int, int]] | None = None,
    ) -> AccountUpdate:
        """``$set`` the fields whose value differs; unknown values are simply absent from
        ``fields``, so they can never overwrite a known one with null or 0. ``rounded``:
        ``instagramData`` count -> (shown value, step) for counts shown rounded; one that
        agrees with the stored count leaves it as it is. An id already stored is never
        replaced (the caller refused an answer naming another). The account was just read
        from Instagram, and proven to be this one, so "gone" and "recycled" marks are removed."""
        doc = self._coll.find_one({"_id": ObjectId(account_id)})
        if doc is None:
            raise AccountNotFound(f"Account {account_id} disappeared during the refresh")
        fields = _keep_agreeing(doc, fields, rounded or {})
        known = _user_ids(doc)
        if known and isinstance(fields.get("instagramData"), dict):
            fields = {
                **fields,
                "instagramData": {
                    k: v for k, v in fields["instagramData"].items() if k not in known
                },
            }
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
        gone = [
            key for key in (*GONE_FIELDS, RECYCLED_FIELD) if isinstance(data, dict) and key in data
        ]
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

    def mark_recycled(
        self, account_id: str, known: dict[str, str], seen: dict[str, str], now: datetime
    ) -> None:
        """The handle answered as another Instagram user: flag it (and nothing else) for
        operators; ``instagramData.handleRecycled`` is ``{"knownIds", "seenIds", "at"}``."""
        self._coll.update_one(
            {"_id": ObjectId(account_id)},
            {
                "$set": {
                    f"instagramData.{RECYCLED_FIELD}": {
                        "knownIds": known,
                        "seenIds": seen,
                        "at": now,
                    },
                }
            },
        )

    def count_recycled(self, platform: str) -> int:
        """Accounts flagged by ``mark_recycled`` and not refreshed successfully since."""
        return self._coll.count_documents(
            {"platform": platform, f"instagramData.{RECYCLED_FIELD}": {"$exists": True}}
        )

    def mark_gone(self, account_id: str, now: datetime) -> None:
        """Instagram answered 404: say so on the account instead of retrying forever."""
        self._coll.update_one(
            {"_id": ObjectId(account_id)},
            {"$set": {"instagramData.isGone": True, "instagramData.goneAt": now, "updatedAt": now}},
        )
