"""Creating a Dagster asset backfill from Python: the one adapter over Dagster internals here.

Dagster 1.13 has no public Python API that creates a backfill. The UI's partition dialog calls
the GraphQL mutation ``launchPartitionBackfill``, whose resolver builds a ``PartitionBackfill``
from the asset graph and stores it with ``instance.add_backfill``; the backfill daemon then
submits its runs, and the Backfills page shows its progress. This does the same for one asset,
so a backfill by query is indistinguishable from one launched in the UI.
"""

import time
from collections.abc import Mapping, Sequence

from dagster import AssetsDefinition, DagsterInstance
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.utils import make_new_backfill_id


def submit_asset_backfill(
    instance: DagsterInstance,
    asset: AssetsDefinition,
    partition_keys: Sequence[str],
    tags: Mapping[str, str],
    title: str,
    description: str,
) -> str:
    """Store a REQUESTED backfill of ``partition_keys`` (which must exist) and return its id."""
    backfill_id = make_new_backfill_id()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id,
        asset_graph=AssetGraph.from_assets([asset]),
        partition_names=list(partition_keys),
        asset_selection=[asset.key],
        backfill_timestamp=time.time(),
        tags=dict(tags),
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title,
        description=description,
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill_id


def backfill_partitions(backfill: PartitionBackfill, asset: AssetsDefinition) -> list[str]:
    """The partition keys a backfill of ``asset`` targets, read through Dagster's own model
    (the stored backfill has no public accessor for them)."""
    data = backfill.get_asset_backfill_data(AssetGraph.from_assets([asset]))
    subset = data.target_subset.get_partitions_subset(asset.key)
    return sorted(subset.get_partition_keys())
