"""What deleting a run leaves behind in a Dagster instance, cleaned up after it.

Adapter around two non-public ``DagsterInstance`` methods, kept in this one module on purpose;
no public API covers either:

- ``wipe_asset_cached_status``: Dagster caches each asset's materialized partitions and only
  moves that cache forward, from the last event it saw. Deleting runs removes events behind
  that point, so without this the asset page would keep showing pruned partitions as
  materialized until the set of partitions next changes. The next page load rebuilds the cache
  from the events that remain.
- ``storage_directory``: ``delete_run`` removes the run's rows, not the files the run wrote
  under ``$DAGSTER_HOME/storage/<run_id>`` (the filesystem IO manager's step outputs, captured
  stdout/stderr). On one machine those would pile up by the million.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dagster import AssetKey, DagsterInstance


def forget_cached_partition_status(instance: DagsterInstance, asset_key: AssetKey) -> None:
    instance.wipe_asset_cached_status([asset_key])


def remove_run_files(instance: DagsterInstance, run_id: str) -> None:
    """The deleted run's own folder of local files, if this instance keeps any."""
    folder = Path(instance.storage_directory()) / run_id
    if folder.is_dir():
        shutil.rmtree(folder)
