"""The refresh asset and its job: one run per account partition, in one step.

The stages (``stages.py``: load → fetch → upsert → cache → insights → log) run inside a single
step because Dagster writes about eight event-log rows per step whatever it logs, and a
refresh is a few hundred milliseconds of I/O: seven steps cost 84 rows a run, one costs about
20, which is what keeps the event log bounded at hundreds of thousands of refreshes a week.
What an operator lost with the per-step graph is kept elsewhere: each stage logs one line and
names itself in any failure, the materialization's metadata holds every stage's result, and a
retried attempt resumes after the last stage it finished instead of fetching again.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Failure,
    MaterializeResult,
    define_asset_job,
    in_process_executor,
    multi_asset,
)

from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.run.checks import (
    ACCOUNT_IDENTITY,
    ASSET,
    CHECK_SPECS,
    identity_refused,
    profile_checks,
)
from ig_refresh_dagster.refresh.run.failures import TRANSIENT_RETRIES, failure_recorded
from ig_refresh_dagster.refresh.run.resources import InstagramResource, MongoResource, RedisResource
from ig_refresh_dagster.refresh.run.run_tags import tag_current_run
from ig_refresh_dagster.refresh.run.stages import AccountRefresh, IdentityRefused, Refreshed
from ig_refresh_dagster.refresh.run.worker import worker_identity_tags


def _metadata(refreshed: Refreshed) -> dict[str, str | int | float]:
    profile, update = refreshed.outcome.profile, refreshed.update
    numbers = {
        "followers": profile.followers_count,
        "following": profile.follows_count,
        "media_count": profile.media_count,
        "engagement_rate": profile.engagement_rate,
    }
    return {
        # Unknown numbers are left out rather than plotted as 0.
        **{k: v for k, v in numbers.items() if v is not None},
        "username": profile.username,
        "source": profile.source,
        "method": profile.method,
        "fetch": "; ".join(refreshed.outcome.notes),
        "changed_fields": ", ".join(update.changed) or "none",
        "cache": refreshed.cache,
        "insights": refreshed.insights.summary(),
    }


# A multi_asset only because it is the form whose outputs, checks included, may be left out:
# a skipped or deferred refresh yields nothing, so the asset never claims data it did not read.
@multi_asset(
    name=ASSET,
    specs=[
        AssetSpec(
            ASSET,
            skippable=True,
            kinds={"instagram", "mongodb", "redis"},
            group_name="instagram",
            description=(
                "An Instagram creator profile, refreshed into Account, the cache and the log."
            ),
        )
    ],
    partitions_def=instagram_accounts,
    check_specs=CHECK_SPECS,
    can_subset=True,
    retry_policy=TRANSIENT_RETRIES,
)
def instagram_profile(
    context: AssetExecutionContext,
    mongo: MongoResource,
    redis: RedisResource,
    instagram: InstagramResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    if AssetKey(ASSET) not in context.selected_asset_keys:
        raise Failure(
            description=(
                "The checks are evaluated by each refresh, on what it stored: materialize "
                f"{ASSET} for this account to evaluate them again."
            ),
            allow_retries=False,
        )
    op_context = context.op_execution_context
    # Which process runs this, for the dead-run reaper (dead_runs.py); a worker that dies
    # before this line is still found gone once its pid is.
    tag_current_run(op_context, worker_identity_tags())
    selected = {key.name for key in context.selected_asset_check_keys}
    with failure_recorded(op_context, mongo):
        try:
            refreshed = AccountRefresh(op_context, mongo, redis, instagram).run()
        except IdentityRefused as refused:
            # Nothing was written, so nothing is materialized; the check says why.
            if ACCOUNT_IDENTITY in selected:
                yield identity_refused(
                    refused.reason, refused.description or "", refused.known, refused.seen
                )
            raise
    if refreshed is None:
        return
    yield MaterializeResult(asset_key=ASSET, metadata=_metadata(refreshed))
    checks = profile_checks(refreshed.outcome.profile, refreshed.update, instagram)
    yield from (check for check in checks if check.check_name in selected)


instagram_refresh_job = define_asset_job(
    "instagram_refresh_job",
    selection=[instagram_profile],
    partitions_def=instagram_accounts,
    executor_def=in_process_executor,
    description="Refresh one Instagram account (one partition per account id).",
)
