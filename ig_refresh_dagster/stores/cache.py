"""The app's Redis cache entry ``accounts-instagram-{accountId}``.

The entry belongs to the web app: a refresh only freshens an entry that exists, merging into
its ``account`` object under WATCH/MULTI (so a concurrent writer makes us re-read, not clobber)
and with KEEPTTL (so the app's expiry still applies).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import redis


class CacheOutcome(StrEnum):
    UPDATED = "updated"
    ABSENT = "absent"
    UNREADABLE = "unreadable"


def cache_key(cache_id: str) -> str:
    return f"accounts-instagram-{cache_id}"


class ProfileCache:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def refresh(self, cache_id: str, account_fields: dict[str, Any]) -> CacheOutcome:
        key = cache_key(cache_id)

        def merge(pipe: redis.client.Pipeline) -> CacheOutcome:
            raw = pipe.get(key)
            if raw is None:
                return CacheOutcome.ABSENT
            try:
                entry = json.loads(raw)
            except ValueError:
                return CacheOutcome.UNREADABLE
            if not isinstance(entry, dict):
                return CacheOutcome.UNREADABLE
            account = entry.get("account")
            entry["account"] = {**(account if isinstance(account, dict) else {}), **account_fields}
            pipe.multi()
            pipe.set(key, json.dumps(entry), keepttl=True)
            return CacheOutcome.UPDATED

        return self._client.transaction(merge, key, value_from_callable=True)
