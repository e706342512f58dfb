"""Backfill by query: the analysts' way to refresh accounts chosen by what they know.

One plan, two doors: ``ig-refresh backfill …`` and the launchpad job ``backfill_by_query``
both turn an ``AccountQuery`` into a ``BackfillPlan`` (count, sample, ETA at the backfill share
of the current budgets) and, unless it is a dry run, register the accounts as partitions and
create one Dagster backfill of ``instagram_profile``. Its runs are tagged as background
traffic: queued behind event runs and held to the backfill share of each hourly budget.
Accounts refreshed within the minimum interval are left out (their runs would only be skipped).
"""

from datetime import UTC, datetime, timedelta

from dagster import (
    Config,
    DagsterInstance,
    Failure,
    OpExecutionContext,
    Output,
    job,
    op,
)
from pydantic import BaseModel, Field, ValidationError

from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.refresh.launch.asset_backfill import submit_asset_backfill
from ig_refresh_dagster.refresh.launch.requests import add_partitions, launch_tags
from ig_refresh_dagster.refresh.run.job import instagram_profile
from ig_refresh_dagster.refresh.run.resources import InstagramResource, MongoResource
from ig_refresh_dagster.refresh.run.tags import Source
from ig_refresh_dagster.stores.budget_share import BackgroundCapacity
from ig_refresh_dagster.stores.selection import (
    AccountQuery,
    AccountSelector,
    SelectedAccount,
    query_errors,
)

SAMPLE = 10


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "never (the backfill share of every usable budget is 0)"
    if seconds < 60:
        return "now (the current budgets admit them all)"
    if seconds < 3600:
        return f"about {seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"about {seconds / 3600:.1f} h"
    return f"about {seconds / 86400:.1f} days"


class BackfillPlan(BaseModel):
    query: AccountQuery
    accounts: list[SelectedAccount]
    recent: int
    unmatched: list[str]
    capacity: BackgroundCapacity
    min_interval_hours: int

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.accounts]

    def report(self) -> list[str]:
        lines = [f"{len(self.accounts)} accounts selected ({self.query.describe()})"]
        if self.recent:
            lines.append(
                f"left out: {self.recent} refreshed within the last {self.min_interval_hours}h "
                "(INSTAGRAM_MIN_REFRESH_INTERVAL_HOURS)"
            )
        if self.unmatched:
            shown = ", ".join(self.unmatched[:SAMPLE])
            more = len(self.unmatched) - SAMPLE
            lines.append(f"not found: {shown}{f' and {more} more' if more > 0 else ''}")
        if self.accounts:
            lines.append("sample: " + ", ".join(_describe(a) for a in self.accounts[:SAMPLE]))
            eta = duration_text(self.capacity.eta_seconds(len(self.accounts)))
            lines.append(f"ETA: {eta} at the backfill share of the hourly budgets")
        lines.append(f"budgets: {self.capacity.summary()}")
        return lines


def _describe(account: SelectedAccount) -> str:
    followers = f"{account.followers:,} followers" if account.followers is not None else "?"
    last = account.last_refresh.date().isoformat() if account.last_refresh else "never"
    return f"{account.label} ({followers}, refreshed {last})"


def plan_backfill(
    query: AccountQuery, mongo: MongoResource, instagram: InstagramResource
) -> BackfillPlan:
    now = datetime.now(UTC)
    selection = AccountSelector(mongo.db()).select(query, now)
    interval = timedelta(hours=instagram.min_refresh_interval_hours)
    due = [
        a
        for a in selection.accounts
        if is_account_id(a.id) and (a.last_refresh is None or now - a.last_refresh >= interval)
    ]
    return BackfillPlan(
        query=query,
        accounts=due,
        recent=len(selection.accounts) - len(due),
        unmatched=selection.unmatched,
        capacity=instagram.background_capacity(),
        min_interval_hours=instagram.min_refresh_interval_hours,
    )


def launch_backfill(instance: DagsterInstance, plan: BackfillPlan) -> str:
    """Register the accounts that are not partitions yet, then create the backfill."""
    add_partitions(instance, plan.ids)
    return submit_asset_backfill(
        instance,
        instagram_profile,
        plan.ids,
        tags=launch_tags(Source.BACKFILL),
        title=plan.query.describe(),
        description="; ".join(plan.report()[:3])[:1000],
    )


class AccountBackfillConfig(Config):
    """Every criterion given must hold; at least one is required."""

    handles: list[str] = Field(
        default=[], description="Instagram handles or account ids (one per entry)"
    )
    ids: list[str] = Field(default=[], description="account ids (24 hex digits)")
    stale_days: int | None = Field(
        default=None, description="not refreshed for this many days (never refreshed included)"
    )
    followers_min: int | None = Field(default=None, description="at least this many followers")
    followers_max: int | None = Field(default=None, description="at most this many followers")
    never_refreshed: bool = Field(default=False, description="never refreshed at all")
    failed_days: int | None = Field(
        default=None, description="a refresh failed within this many days (DataRefreshLog)"
    )
    limit: int | None = Field(default=None, description="at most this many, most overdue first")
    dry_run: bool = Field(default=False, description="report count, sample and ETA only")

    def query(self) -> AccountQuery:
        return AccountQuery(
            accounts=self.handles,
            **self.model_dump(exclude={"handles", "dry_run"}),
        )


@op(description="Selects accounts, registers them as partitions and creates the backfill.")
def launch_account_backfill(
    context: OpExecutionContext,
    config: AccountBackfillConfig,
    mongo: MongoResource,
    instagram: InstagramResource,
) -> Output[int]:
    try:
        query = config.query()
    except ValidationError as exc:
        errors = "; ".join(query_errors(exc))
        raise Failure(description=f"invalid selection: {errors}", allow_retries=False) from None
    plan = plan_backfill(query, mongo, instagram)
    for line in plan.report():
        context.log.info(line)
    metadata: dict[str, object] = {
        "accounts": len(plan.accounts),
        "sample": ", ".join(a.label for a in plan.accounts[:SAMPLE]) or "none",
        "eta": duration_text(plan.capacity.eta_seconds(len(plan.accounts))),
        "dry_run": config.dry_run,
    }
    if plan.accounts and not config.dry_run:
        backfill_id = launch_backfill(context.instance, plan)
        metadata["backfill_id"] = backfill_id
        context.log.info(f"backfill {backfill_id} created: its progress is under Runs → Backfills")
    return Output(len(plan.ids), metadata=metadata)


@job(
    description=(
        "Backfill Instagram accounts chosen by handles/ids, staleness, follower range, never "
        "refreshed, or failed recently. Open the Launchpad, fill in the config, set dry_run "
        "to see count, sample and ETA first."
    ),
)
def backfill_by_query() -> None:
    launch_account_backfill()
