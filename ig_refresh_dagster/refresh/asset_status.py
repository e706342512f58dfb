"""Make the asset page recompute which partitions are materialized after runs were deleted.

Adapter around the non-public ``DagsterInstance.wipe_asset_cached_status``, kept in this one
module on purpose. Dagster caches each asset's materialized partitions and only moves that
cache forward, from the last event it saw. Deleting runs removes events behind that point, so
without this the page would keep showing pruned partitions as materialized until the set of
partitions next changes. No public API invalidates the cache; the next page load rebuilds it
from the events that remain.
"""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance


def forget_cached_partition_status(instance: DagsterInstance, asset_key: AssetKey) -> None:
    instance.wipe_asset_cached_status([asset_key])
