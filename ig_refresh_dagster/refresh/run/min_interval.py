"""The minimum interval between two refreshes of one account, enforced inside the refresh.

Events, the freshness sensor and backfills by query all ask for refreshes independently (and
the platform's own cron may still publish events), so the check lives in the run itself, where
every path meets: a run that comes too soon after the last refresh ends at its first step,
SKIPPED in ``DataRefreshLog`` with the reason and tagged ``ig-refresh/skipped``. An operator's
explicit launch (see ``tags.is_operator_launch``) always refreshes. A deferral's retry ends
SKIPPED the same way when another run adopted the deferral first: one deferral, one refresh.
"""

from collections.abc import Mapping
from datetime import datetime, timedelta

from dagster import OpExecutionContext

from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.refresh.run.tags import (
    HANDLE,
    RETRY_OF,
    SKIPPED,
    SOURCE,
    is_operator_launch,
)
from ig_refresh_dagster.stores.accounts import AccountRecord


def skip_reason(
    tags: Mapping[str, str],
    last_refresh: datetime | None,
    now: datetime,
    min_interval_hours: int,
) -> str | None:
    """Why this run must not refresh the account, or None when it should."""
    if min_interval_hours <= 0 or last_refresh is None or is_operator_launch(tags):
        return None
    age = now - last_refresh
    if age >= timedelta(hours=min_interval_hours):
        return None
    return (
        f"refreshed {age.total_seconds() / 3600:.1f}h ago, within the minimum interval of "
        f"{min_interval_hours}h (INSTAGRAM_MIN_REFRESH_INTERVAL_HOURS); "
        f"requested by {tags.get(SOURCE)}"
    )


def name_run(context: OpExecutionContext, account: AccountRecord) -> None:
    """Tag the run with the handle when whoever launched it could not (the UI, Dagster's
    backfill daemon, which gives every run of a backfill the same tags)."""
    if account.username and HANDLE not in context.run.tags:
        context.instance.add_run_tags(context.run_id, {HANDLE: account.username})


def skip_if_recent(
    context: OpExecutionContext,
    mongo: MongoResource,
    account: AccountRecord,
    min_interval_hours: int,
    now: datetime,
) -> bool:
    """True when the run was ended as SKIPPED, with the reason logged, tagged and stored."""
    reason = skip_reason(context.run.tags, account.last_refresh, now, min_interval_hours)
    if reason is None:
        return False
    _end_skipped(context, mongo, account, reason, now)
    return True


def skip_if_superseded(
    context: OpExecutionContext,
    mongo: MongoResource,
    account: AccountRecord,
    adopted: list[str],
    now: datetime,
) -> bool:
    """True when this is a deferral's retry whose deferral another run adopted first (the
    next event for the account, say): that run refreshes it, so this one ends SKIPPED rather
    than refresh the account a second time, whoever launched the deferred run."""
    retry_of = context.run.tags.get(RETRY_OF)
    if retry_of is None or retry_of in adopted:
        return False
    by = mongo.refresh_log().retried_by(retry_of)
    if by is None or by == context.run_id:
        return False
    _end_skipped(
        context, mongo, account, f"the deferral of run {retry_of} was retried by {by}", now
    )
    return True


def _end_skipped(
    context: OpExecutionContext,
    mongo: MongoResource,
    account: AccountRecord,
    reason: str,
    now: datetime,
) -> None:
    mongo.refresh_log().skip(context.run_id, reason, now)
    context.instance.add_run_tags(context.run_id, {SKIPPED: reason.split(",")[0]})
    context.log.warning(f"Skipping @{account.username}: {reason}")
