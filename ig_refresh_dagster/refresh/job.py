"""The refresh asset and its job: one run per account partition.

load → fetch → upsert → cache → insights → log, executed in process (the steps are short and
I/O-bound, so a process per step would cost more than the work).
"""

from typing import Any

from dagster import define_asset_job, graph_asset, in_process_executor

from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.checks import (
    ASSET,
    CHECK_SPECS,
    FOLLOWER_JUMP,
    GRAPH_ENABLED,
    PROFILE_COMPLETE,
    check_profile,
)
from ig_refresh_dagster.refresh.ops import (
    collect_insights,
    fetch_profile,
    load_account,
    record_refresh_failure,
    refresh_cache,
    upsert_account,
    write_refresh_log,
)


@graph_asset(
    key=ASSET,
    partitions_def=instagram_accounts,
    hooks={record_refresh_failure},
    check_specs=CHECK_SPECS,
    kinds={"instagram", "mongodb", "redis"},
    group_name="instagram",
    description="An Instagram creator profile, refreshed into Account, the cache and the log.",
)
def instagram_profile() -> Any:
    account = load_account()
    outcome = fetch_profile(account)
    update = upsert_account(account, outcome)
    cache = refresh_cache(account, update)
    insights = collect_insights(account, outcome)
    refreshed = write_refresh_log(outcome, update, cache, insights)
    jump, complete, graph = check_profile(outcome, update, refreshed)
    return {
        "result": refreshed,
        f"{ASSET}_{FOLLOWER_JUMP}": jump,
        f"{ASSET}_{PROFILE_COMPLETE}": complete,
        f"{ASSET}_{GRAPH_ENABLED}": graph,
    }


instagram_refresh_job = define_asset_job(
    "instagram_refresh_job",
    selection=[instagram_profile],
    partitions_def=instagram_accounts,
    executor_def=in_process_executor,
    description="Refresh one Instagram account (one partition per account id).",
)
