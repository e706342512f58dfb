"""The one definition of "a refresh run", for every component that looks at runs.

A refresh run materializes ``instagram_profile`` for one account partition. It is known by its
asset and partition, never by its job: the event, deferral and freshness sensors launch
``instagram_refresh_job``, while UI Materialize and every backfill (``backfill_by_query`` and
``ig-refresh backfill`` included) run as Dagster's implicit ``__ASSET_JOB``. ``RunsFilter``
cannot select by asset, so callers read runs by status and keep those this predicate accepts.
"""

from __future__ import annotations

from collections.abc import Iterable

from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.refresh.run.checks import ASSET

PARTITION_TAG = "dagster/partition"
PROFILE = AssetKey(ASSET)
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def is_refresh_run(run: DagsterRun) -> bool:
    """True for a run of ``instagram_profile`` for one account, whatever launched it.

    Only ``instagram_profile`` is partitioned by account (``test_definitions`` holds that), so a
    run without an asset selection (a whole asset job, such as ``instagram_refresh_job``) whose
    partition is an account id refreshes it; a run with a selection must select it (a run of
    the checks alone refreshes nothing)."""
    if not is_account_id(run.tags.get(PARTITION_TAG, "")):
        return False
    return run.asset_selection is None or PROFILE in run.asset_selection


def account_of(run: DagsterRun) -> str:
    return run.tags.get(PARTITION_TAG, "")


def refresh_runs(runs: Iterable[DagsterRun]) -> list[DagsterRun]:
    return [run for run in runs if is_refresh_run(run)]


def refresh_runs_in_flight(instance: DagsterInstance, tags: dict | None = None) -> list[DagsterRun]:
    """Refresh runs queued, starting or running (optionally with ``tags``)."""
    return refresh_runs(instance.get_runs(RunsFilter(statuses=IN_FLIGHT, tags=tags or {})))
