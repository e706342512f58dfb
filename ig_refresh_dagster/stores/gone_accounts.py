"""Which account partitions no longer have an account to refresh.

A partition is archivable when its ``Account`` was deleted from MongoDB or Instagram answered
404 for it (``instagramData.isGone``, set by the fetch step). Lookups go in batches with a
projection, so checking 300,000 partitions reads ids and one flag, not whole documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Any

from bson import ObjectId

from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.stores.accounts import COLLECTION

BATCH = 1000


class ArchiveReason(StrEnum):
    DELETED = "deleted"
    GONE = "gone"
    NOT_AN_ACCOUNT_ID = "not an account id"


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def archivable_accounts(db: Any, account_ids: Iterable[str]) -> dict[str, ArchiveReason]:
    """The given ids whose account is deleted, gone, or that are no account id at all."""
    ids = list(account_ids)
    found: dict[str, ArchiveReason] = {
        key: ArchiveReason.NOT_AN_ACCOUNT_ID for key in ids if not is_account_id(key)
    }
    valid = [key for key in ids if key not in found]
    for batch in _batches(valid, BATCH):
        docs = db[COLLECTION].find(
            {"_id": {"$in": [ObjectId(key) for key in batch]}}, {"instagramData.isGone": 1}
        )
        present: set[str] = set()
        for doc in docs:
            key = str(doc["_id"])
            present.add(key)
            if (doc.get("instagramData") or {}).get("isGone") is True:
                found[key] = ArchiveReason.GONE
        found.update({key: ArchiveReason.DELETED for key in batch if key not in present})
    return found
