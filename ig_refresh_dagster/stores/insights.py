"""``InstagramInsights``: one document per account and UTC day, for accounts whose owner
authorised us (``Account.instagramAuth``).

Every write is an upsert on ``(accountId, day)``, so a rerun on the same day replaces that day's
numbers instead of adding a second document; the unique index makes a duplicate impossible even
when two runs race.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from bson import ObjectId
from pydantic import BaseModel, ConfigDict, SecretStr

from ig_refresh_dagster.instagram.insights import AccountInsights

COLLECTION = "InstagramInsights"
AUTH_FIELD = "instagramAuth"


class OwnerAuth(BaseModel):
    """The owner's Instagram user id and token; the token is a SecretStr so a repr, a log line
    or a run's metadata shows ``**********`` instead of it."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    access_token: SecretStr


def owner_auth(account_doc: dict[str, Any]) -> OwnerAuth | None:
    """The owner's authorisation from an ``Account`` document, or None when the account is not
    authorised (no ``instagramAuth``, or a missing or blank user id or token)."""
    auth = account_doc.get(AUTH_FIELD)
    if not isinstance(auth, dict):
        return None
    user_id = auth.get("userId")
    token = auth.get("accessToken")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not isinstance(token, str):
        return None
    user_id, token = user_id.strip(), token.strip()
    if not user_id or not token:
        return None
    return OwnerAuth(user_id=user_id, access_token=SecretStr(token))


class InsightsStore:
    def __init__(self, db: Any) -> None:
        self._coll = db[COLLECTION]

    def ensure_indexes(self) -> None:
        self._coll.create_index([("accountId", 1), ("day", 1)], unique=True)

    def save(self, account_id: str, insights: AccountInsights, now: datetime) -> None:
        self._coll.update_one(
            {"accountId": ObjectId(account_id), "day": insights.day.isoformat()},
            {
                "$set": {
                    "userId": insights.user_id,
                    "metrics": dict(insights.metrics),
                    "media": [
                        {"mediaId": m.media_id, "metrics": dict(m.metrics)} for m in insights.media
                    ],
                    "unsupported": list(insights.unsupported),
                    "fetchedAt": now,
                }
            },
            upsert=True,
        )

    def for_day(self, account_id: str, day: date) -> dict[str, Any] | None:
        return self._coll.find_one({"accountId": ObjectId(account_id), "day": day.isoformat()})
