"""The app's Redis cache entry ``accounts-instagram-{accountId}``.

The entry belongs to the web app: a refresh only freshens an entry that exists, merging into
its ``account`` object under WATCH/MULTI (so a concurrent writer makes us re-read, not clobber)
and with KEEPTTL (so the app's expiry still applies). The re-read loop is bounded: an entry that
keeps changing under us (``MAX_MERGE_ATTEMPTS`` re-reads, with jittered pauses between them) is
a transient failure (the step retries later), never a spin.
Errors that pass (a failover's READONLY, LOADING, OOM, …) become ``StoreUnavailable``.
"""

from __future__ import annotations

import json
import random
import time
from enum import StrEnum
from typing import Any

import redis

from ig_refresh_dagster.stores.redis_faults import StoreUnavailable, describe, is_transient

MAX_MERGE_ATTEMPTS = 10
# Jittered pause before re-reading, so racing writers stop colliding in lockstep.
_BACKOFF_CAP_SECONDS = 0.05


class CacheOutcome(StrEnum):
    UPDATED = "updated"
    ABSENT = "absent"
    UNREADABLE = "unreadable"


def cache_key(cache_id: str) -> str:
    return f"accounts-instagram-{cache_id}"


def _merged(raw: bytes | None, account_fields: dict[str, Any]) -> dict[str, Any] | CacheOutcome:
    if raw is None:
        return CacheOutcome.ABSENT
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError):
        return CacheOutcome.UNREADABLE
    if not isinstance(entry, dict):
        return CacheOutcome.UNREADABLE
    account = entry.get("account")
    entry["account"] = {**(account if isinstance(account, dict) else {}), **account_fields}
    return entry


class ProfileCache:
    def __init__(self, client: redis.Redis, max_attempts: int = MAX_MERGE_ATTEMPTS) -> None:
        self._client = client
        self._max_attempts = max_attempts

    def refresh(self, cache_id: str, account_fields: dict[str, Any]) -> CacheOutcome:
        key = cache_key(cache_id)
        try:
            for attempt in range(self._max_attempts):
                with self._client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)
                        merged = _merged(pipe.get(key), account_fields)
                        if isinstance(merged, CacheOutcome):
                            return merged
                        pipe.multi()
                        pipe.set(key, json.dumps(merged), keepttl=True)
                        pipe.execute()
                        return CacheOutcome.UPDATED
                    except redis.WatchError:
                        time.sleep(random.uniform(0, min(_BACKOFF_CAP_SECONDS, 0.001 * 2**attempt)))
        except redis.RedisError as exc:
            if is_transient(exc):
                raise StoreUnavailable(f"cache entry {key}: {describe(exc)}") from None
            raise
        raise StoreUnavailable(
            f"cache entry {key} changed under every one of {self._max_attempts} merges"
        )
