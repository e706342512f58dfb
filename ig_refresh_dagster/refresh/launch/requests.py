"""The one way a refresh is requested: its tags, priority, source and partition bookkeeping.

The event sensor, the deferral sensor, the freshness sensor and backfill by query all build
their requests here, so what a run says about who asked for it (``tags.py``) is the same on
every path, and a deferred refresh's retry carries what the run that deferred carried: an event
stays foreground work, a freshness or backfill refresh stays within the backfill share and
behind event runs, and only an operator's own launch skips the minimum interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import AddDynamicPartitionsRequest, DagsterInstance, RunRequest

from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.run.tags import (
    BACKGROUND_PRIORITY,
    FORCE,
    HANDLE,
    PRIORITY,
    SOURCE,
    Source,
    handle_tag,
)

# Dagster's tag on every run of a backfill (launched by query or in the UI).
BACKFILL_TAG = "dagster/backfill"
# What a retry copies from the run it retries.
_CARRIED = (SOURCE, PRIORITY, FORCE, HANDLE)


def launch_tags(source: Source, handle: str | None = None) -> dict[str, str]:
    """Who asked for the refresh; freshness and backfill runs queue behind event runs."""
    tags = {SOURCE: source.value, **handle_tag(handle)}
    if source in (Source.FRESHNESS, Source.BACKFILL):
        tags[PRIORITY] = BACKGROUND_PRIORITY
    return tags


def retry_tags(original: Mapping[str, str] | None) -> dict[str, str]:
    """The launch tags of a refresh run again for ``original`` (the tags of the run that
    deferred it). A run of a UI backfill is background work like its backfill; with the
    original run gone (pruned), the retry is an event's: foreground, minimum interval applies."""
    if original is None:
        return launch_tags(Source.EVENT)
    tags = {k: v for k in _CARRIED if (v := original.get(k)) is not None}
    if BACKFILL_TAG in original and SOURCE not in tags:
        tags |= launch_tags(Source.BACKFILL)
    return tags


def refresh_request(
    account_id: str,
    run_key: str,
    tags: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> RunRequest:
    """One account's refresh run; ``tags`` from ``launch_tags`` or ``retry_tags``, ``extra``
    only says more about the request (offsets, the deferral it retries)."""
    return RunRequest(run_key=run_key, partition_key=account_id, tags={**tags, **(extra or {})})


def partition_requests(requests: Sequence[RunRequest]) -> list[AddDynamicPartitionsRequest]:
    """The keys the requests run against, added in the same tick (a no-op for existing keys)."""
    keys = list(dict.fromkeys(r.partition_key for r in requests if r.partition_key))
    return [instagram_accounts.build_add_request(keys)] if keys else []


def add_partitions(instance: DagsterInstance, keys: Sequence[str]) -> None:
    """For launches outside a sensor (a backfill): add the keys that are not partitions yet."""
    known = set(instance.get_dynamic_partitions(instagram_accounts.name))
    new = [k for k in dict.fromkeys(keys) if k not in known]
    if new:
        instance.add_dynamic_partitions(instagram_accounts.name, new)
