"""Choosing Instagram accounts by what analysts know about them, one query each.

The same ``AccountQuery`` serves the CLI (``ig-refresh backfill``) and the launchpad job, and the
freshness sensor and the Kafka sensor use the narrower look-ups below. Every result is ordered
the same way: never refreshed first, then the longest-unrefreshed, then the most-followed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Self

from bson import ObjectId
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ig_refresh_dagster.instagram.errors import InvalidUsername
from ig_refresh_dagster.instagram.usernames import validate_username
from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.stores.accounts import COLLECTION, as_utc, username_of
from ig_refresh_dagster.stores.refresh_log import COLLECTION as REFRESH_LOG
from ig_refresh_dagster.stores.refresh_log import PLATFORM

ORDER = [("lastDataRefresh", 1), ("followerCount", -1), ("_id", 1)]
_PROJECTION = {"handle": 1, "accountId": 1, "followerCount": 1, "lastDataRefresh": 1}
_NOT_GONE = {"instagramData.isGone": {"$ne": True}}
_NEVER_REFRESHED = {"lastDataRefresh": None}  # matches a missing field and an explicit null
_BATCH = 1000
_NAME_FIELDS = ("handle", "accountId")


class SelectedAccount(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    handle: str | None
    followers: int | None
    last_refresh: datetime | None

    @property
    def label(self) -> str:
        return f"@{self.handle}" if self.handle else self.id


class AccountQuery(BaseModel):
    """Every criterion given must hold. ``accounts`` mixes handles and ids (a file's lines);
    ``ids`` must all be account ids. Without an explicit list, accounts Instagram reported gone
    are left out."""

    model_config = ConfigDict(frozen=True)

    accounts: list[str] = Field(default_factory=list)
    ids: list[str] = Field(default_factory=list)
    stale_days: PositiveInt | None = None
    followers_min: int | None = Field(default=None, ge=0)
    followers_max: int | None = Field(default=None, ge=0)
    never_refreshed: bool = False
    failed_days: PositiveInt | None = None
    limit: PositiveInt | None = None

    @field_validator("accounts", "ids")
    @classmethod
    def _strip(cls, values: list[str]) -> list[str]:
        return [v.strip() for v in values if v.strip()]

    @field_validator("ids")
    @classmethod
    def _ids(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not is_account_id(v.lower())]
        if bad:
            raise ValueError(f"not account ids (24 hex digits): {', '.join(bad[:5])[:200]}")
        return [v.lower() for v in values]

    @field_validator("accounts")
    @classmethod
    def _accounts(cls, values: list[str]) -> list[str]:
        bad = []
        for value in values:
            if not is_account_id(value.lower()):
                try:
                    validate_username(value)
                except InvalidUsername:
                    bad.append(value)
        if bad:
            raise ValueError(f"neither handles nor account ids: {', '.join(bad[:5])[:200]}")
        return values

    @model_validator(mode="after")
    def _criteria(self) -> Self:
        if not (
            self.accounts
            or self.ids
            or self.stale_days
            or self.followers_min is not None
            or self.followers_max is not None
            or self.never_refreshed
            or self.failed_days
        ):
            raise ValueError(
                "choose accounts by a list, --stale-days, --followers-min/max, "
                "--never-refreshed or --failed-days; nothing selects every account"
            )
        if (
            self.followers_min is not None
            and self.followers_max is not None
            and self.followers_min > self.followers_max
        ):
            raise ValueError("followers_min is greater than followers_max")
        return self

    def listed_ids(self) -> list[str]:
        return [*self.ids, *(a.lower() for a in self.accounts if is_account_id(a.lower()))]

    def listed_handles(self) -> list[str]:
        """As typed, without the ``@`` (Instagram's canonical form is the lower-case one)."""
        return [a.removeprefix("@") for a in self.accounts if not is_account_id(a.lower())]

    def describe(self) -> str:
        """A short title for the backfill (Dagster allows 100 characters)."""
        parts = []
        if self.accounts or self.ids:
            parts.append(f"{len(self.accounts) + len(self.ids)} listed")
        if self.stale_days:
            parts.append(f"stale {self.stale_days}d")
        if self.followers_min is not None or self.followers_max is not None:
            low = self.followers_min if self.followers_min is not None else 0
            high = self.followers_max if self.followers_max is not None else "∞"
            parts.append(f"followers {low}-{high}")
        if self.never_refreshed:
            parts.append("never refreshed")
        if self.failed_days:
            parts.append(f"failed {self.failed_days}d")
        if self.limit:
            parts.append(f"limit {self.limit}")
        return ("Instagram accounts: " + ", ".join(parts))[:100]


def query_errors(exc: ValidationError) -> list[str]:
    """What is wrong with a query, in the words the validators used."""
    return [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]


class Selection(BaseModel):
    accounts: list[SelectedAccount]
    unmatched: list[str]


def _selected(doc: dict[str, Any]) -> SelectedAccount:
    followers = doc.get("followerCount")
    return SelectedAccount(
        id=str(doc["_id"]),
        handle=username_of(doc),
        followers=followers if isinstance(followers, int) else None,
        last_refresh=as_utc(doc.get("lastDataRefresh")),
    )


def _oids(ids: list[str]) -> list[ObjectId]:
    return [ObjectId(i) for i in ids if is_account_id(i)]


def _handle_variants(names: list[str]) -> list[str]:
    """A handle matches as typed or in lower case, stored with or without an ``@`` (exact
    matches keep the query on the index; a case-insensitive regex would scan every account)."""
    return sorted({v for n in names for c in (n, n.lower()) for v in (c, f"@{c}")})


class AccountSelector:
    def __init__(self, db: Any) -> None:
        self._accounts = db[COLLECTION]
        self._log = db[REFRESH_LOG]

    def select(self, query: AccountQuery, now: datetime) -> Selection:
        """The accounts the query names, ordered; listed handles or ids not found are
        returned as ``unmatched`` so a typo is reported rather than silently dropped."""
        clauses: list[dict[str, Any]] = [{"platform": PLATFORM}]
        ids, handles = query.listed_ids(), query.listed_handles()
        if ids or handles:
            variants = _handle_variants(handles)
            clauses.append(
                {
                    "$or": [
                        {"_id": {"$in": _oids(ids)}},
                        *({f: {"$in": variants}} for f in _NAME_FIELDS),
                    ]
                }
            )
        else:
            clauses.append(_NOT_GONE)
        if query.stale_days:
            cutoff = now - timedelta(days=query.stale_days)
            clauses.append({"$or": [{"lastDataRefresh": {"$lt": cutoff}}, _NEVER_REFRESHED]})
        if query.never_refreshed:
            clauses.append(_NEVER_REFRESHED)
        followers = {}
        if query.followers_min is not None:
            followers["$gte"] = query.followers_min
        if query.followers_max is not None:
            followers["$lte"] = query.followers_max
        if followers:
            clauses.append({"followerCount": followers})
        if query.failed_days:
            clauses.append(
                {"_id": {"$in": self._failed_since(now - timedelta(days=query.failed_days))}}
            )
        cursor = self._accounts.find({"$and": clauses}, _PROJECTION).sort(ORDER)
        if query.limit:
            cursor = cursor.limit(query.limit)
        docs = list(cursor)
        found = {str(d["_id"]) for d in docs} | {
            str(d.get(f, "")).strip().lstrip("@").lower() for d in docs for f in _NAME_FIELDS
        }
        unmatched = [i for i in ids if i not in found]
        unmatched += [f"@{h}" for h in handles if h.lower() not in found]
        if query.limit and len(docs) == query.limit:
            unmatched = []  # the limit, not absence, may have left them out
        return Selection(accounts=[_selected(d) for d in docs], unmatched=unmatched)

    def _failed_since(self, cutoff: datetime) -> list[ObjectId]:
        failed = self._log.distinct(
            "accountId",
            {"platform": PLATFORM, "status": "FAILED", "completedAt": {"$gte": cutoff}},
        )
        return [oid for oid in failed if isinstance(oid, ObjectId)]

    def handles(self, ids: list[str]) -> dict[str, str]:
        """Account id → handle for the ids that exist and have one: one query."""
        docs = self._accounts.find({"_id": {"$in": _oids(ids)}}, {"handle": 1, "accountId": 1})
        return {str(d["_id"]): h for d in docs if (h := username_of(d))}

    def existing(self, ids: list[str]) -> set[str]:
        """The ids that name an Account (any platform), in batches of 1,000."""
        found: set[str] = set()
        for start in range(0, len(ids), _BATCH):
            batch = _oids(ids[start : start + _BATCH])
            found |= {
                str(d["_id"]) for d in self._accounts.find({"_id": {"$in": batch}}, {"_id": 1})
            }
        return found

    def overdue(
        self, refreshed_before: datetime, limit: int, exclude: list[str]
    ) -> list[SelectedAccount]:
        """The ``limit`` accounts most overdue for a refresh (never refreshed, or last
        refreshed before ``refreshed_before``), most-followed first among equals: one query."""
        if limit <= 0:
            return []
        query = {
            "platform": PLATFORM,
            **_NOT_GONE,
            "_id": {"$nin": _oids(exclude)},
            "$or": [{"lastDataRefresh": {"$lt": refreshed_before}}, _NEVER_REFRESHED],
        }
        cursor = self._accounts.find(query, _PROJECTION).sort(ORDER).limit(limit)
        return [_selected(doc) for doc in cursor]
