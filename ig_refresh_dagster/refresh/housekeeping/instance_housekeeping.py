"""What the instance keeps about runs and partitions, read and cleaned up where no public API
reaches.

Adapter around non-public ``DagsterInstance`` surfaces, kept in this one module on purpose:

- ``wipe_asset_cached_status``: Dagster caches each asset's materialized partitions and only
  moves that cache forward, from the last event it saw. Deleting runs removes events behind
  that point, so without this the asset page would keep showing pruned partitions as
  materialized until the set of partitions next changes. The next page load rebuilds the cache
  from the events that remain.
- ``storage_directory``: ``delete_run`` removes the run's rows, not the files the run wrote
  under ``$DAGSTER_HOME/storage/<run_id>`` (the filesystem IO manager's step outputs, captured
  stdout/stderr). On one machine those would pile up by the million.
- ``event_log_storage.get_latest_storage_id_by_partition``: the latest materialization of every
  partition in one grouped query (the public ``get_latest_materialization_event`` is one query
  per partition: 300,000 of them at 300k accounts).
- the dynamic-partitions table's ``create_timestamp``: when a key was added, which no public
  call returns; a key added moments ago may still be waiting for the run it was added for.
- ``get_backfills``' asset backfill data: the partitions a backfill in progress still targets.
- the sensor ticks table: the run requests a tick has reserved but not yet submitted. The
  daemon writes a tick's requests before it creates their runs, one by one (a 500-run tick
  takes it about 90 s), and submits what is left on the next tick if one fails; no public call
  lists them across sensors.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as db
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
from dagster._core.scheduler.instigation import (
    InstigatorTick,
    InstigatorType,
    TickData,
    TickStatus,
)
from dagster._core.storage.event_log.schema import DynamicPartitionsTable
from dagster._core.storage.schedules.schema import JobTickTable
from dagster._serdes import deserialize_value

ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
PARTITION_TAG = "dagster/partition"
# Set by Dagster on a failed run that its run-retry daemon is about to re-execute.
WILL_RETRY_TAG = "dagster/will_retry"


def forget_cached_partition_status(instance: DagsterInstance, asset_key: AssetKey) -> None:
    instance.wipe_asset_cached_status([asset_key])


def remove_run_files(instance: DagsterInstance, run_id: str) -> None:
    """The deleted run's own folder of local files, if this instance keeps any."""
    folder = Path(instance.storage_directory()) / run_id
    if folder.is_dir():
        shutil.rmtree(folder)


def partitions_in_flight(instance: DagsterInstance) -> set[str]:
    """Partitions with a run queued, starting, running or being canceled."""
    records = instance.get_run_records(RunsFilter(statuses=ACTIVE))
    return {key for r in records if (key := r.dagster_run.tags.get(PARTITION_TAG))}


# A failed tick's unsubmitted requests are submitted by the sensor's next tick, within minutes.
PENDING_TICK_WINDOW = timedelta(hours=1)


def partitions_in_pending_ticks(instance: DagsterInstance) -> set[str]:
    """Partitions of run requests that a sensor tick reserved and whose runs do not exist
    yet: ticks still submitting (STARTED), and failed ticks whose rest the next one submits."""
    table = JobTickTable
    cutoff = datetime.now(UTC) - PENDING_TICK_WINDOW
    query = db.select(table.c.id, table.c.tick_body).where(
        table.c.type == InstigatorType.SENSOR.value,
        table.c.status.in_([TickStatus.STARTED.value, TickStatus.FAILURE.value]),
        table.c.timestamp > cutoff.replace(tzinfo=None),
    )
    with instance.schedule_storage.connect() as conn:
        rows = conn.execute(query).fetchall()
    keys: set[str] = set()
    for tick_id, body in rows:
        tick = InstigatorTick(tick_id, deserialize_value(body, TickData))
        keys |= {
            r.partition_key for _, r in tick.unsubmitted_run_ids_with_requests if r.partition_key
        }
    return keys


def partitions_about_to_run(instance: DagsterInstance) -> set[str]:
    """Runs in flight and runs a sensor tick is about to create."""
    return partitions_in_flight(instance) | partitions_in_pending_ticks(instance)


# Runs in flight are read again before each batch: a run queued for a key while a pass deletes
# keys is noticed within one batch (under 2 s), not after the whole pass.
DELETE_BATCH = 200


def delete_idle_partitions(
    instance: DagsterInstance, partitions_def_name: str, keys: Sequence[str]
) -> list[str]:
    """Deletes those of ``keys`` that no run is queued for, running or about to be created by
    a sensor tick (a run whose key is gone fails). Returns the keys deleted."""
    deleted: list[str] = []
    for start in range(0, len(keys), DELETE_BATCH):
        busy = partitions_about_to_run(instance)
        for key in keys[start : start + DELETE_BATCH]:
            if key not in busy:
                instance.delete_dynamic_partition(partitions_def_name, key)
                deleted.append(key)
    return deleted


def partitions_awaiting_retry(instance: DagsterInstance, since: datetime) -> set[str]:
    """Partitions of runs that failed after ``since`` and that Dagster's run-retry daemon will
    re-execute: a re-execution runs against the partition its parent ran for."""
    records = instance.get_run_records(
        RunsFilter(
            statuses=[DagsterRunStatus.FAILURE],
            tags={WILL_RETRY_TAG: "true"},
            updated_after=since,
        )
    )
    return {key for r in records if (key := r.dagster_run.tags.get(PARTITION_TAG))}


def latest_materialization_by_partition(
    instance: DagsterInstance, asset_key: AssetKey
) -> Mapping[str, int]:
    """Partition key → storage id of its latest materialization (ids grow with time), for
    every partition ever materialized, in one grouped query."""
    return instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, DagsterEventType.ASSET_MATERIALIZATION
    )


def partitions_added_within(
    instance: DagsterInstance, partitions_def_name: str, within: timedelta
) -> set[str]:
    """Keys of ``partitions_def_name`` added in the last ``within``, by the database's clock
    (the column is written with the database's ``CURRENT_TIMESTAMP``); none for zero."""
    table = DynamicPartitionsTable
    with instance.event_log_storage.index_connection() as conn:
        now = conn.execute(db.select(db.func.current_timestamp(type_=db.DateTime))).scalar_one()
        rows = conn.execute(
            db.select(table.c.partition).where(
                table.c.partitions_def_name == partitions_def_name,
                table.c.create_timestamp > now - within,
            )
        )
        return {row[0] for row in rows}


def partitions_in_requested_backfills(instance: DagsterInstance, asset_key: AssetKey) -> set[str]:
    """Partitions of ``asset_key`` that a backfill still in progress targets: its daemon
    launches their runs later, against keys that must still exist."""
    keys: set[str] = set()
    for backfill in instance.get_backfills(
        filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])
    ):
        data = backfill.asset_backfill_data
        if data is not None:
            keys |= {
                ap.partition_key
                for ap in data.target_subset.iterate_asset_partitions()
                if ap.asset_key == asset_key and ap.partition_key
            }
        elif backfill.partition_names:
            keys |= set(backfill.partition_names)
    return keys
