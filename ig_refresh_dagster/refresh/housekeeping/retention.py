"""Bounded Dagster storage: delete old finished runs with their events, archive the partitions
of accounts that were deleted or are gone.

Every refresh run writes its rows to Dagster's event log, and Dagster OSS prunes none of them.
``DataRefreshLog`` in MongoDB is the long-term record of each refresh; Dagster keeps the recent
window operators debug in. A deleted run's account reads as not materialized on the asset page
until its next refresh, which is the truth: its last refresh is older than the window.

Runs that are queued or in progress are never touched, nor are the partitions they refresh.
The same code backs the ``storage_retention_job`` (its schedule is off by default) and
``ig-refresh retention``.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    Config,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunConfig,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    in_process_executor,
    job,
    op,
    schedule,
)
from pydantic import BaseModel, Field

from ig_refresh_dagster import settings
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.housekeeping.instance_housekeeping import (
    delete_idle_partitions,
    forget_cached_partition_status,
    partitions_in_flight,
    remove_run_files,
)
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.gone_accounts import archivable_accounts
from ig_refresh_dagster.stores.mongo import open_client

PROFILE_ASSET = AssetKey("instagram_profile")
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
PAGE = 500
# One pass deletes at most this many runs, so a first pass over years of history still ends;
# the next pass continues where it stopped.
DEFAULT_MAX_RUNS = 100_000


class RetentionReport(BaseModel):
    cutoff: datetime
    dry_run: bool
    runs: int
    more_runs_left: bool
    archived: dict[str, int]
    kept_active: int

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        archived = ", ".join(f"{n} {reason}" for reason, n in sorted(self.archived.items()))
        more = "; more remain, the next pass continues" if self.more_runs_left else ""
        kept = f"; kept {self.kept_active} with a run queued or running" if self.kept_active else ""
        return (
            f"{verb} {self.runs} finished run(s) created before {self.cutoff:%Y-%m-%d %H:%M} UTC"
            f"{more}; {'would archive' if self.dry_run else 'archived'} "
            f"{sum(self.archived.values())} partition(s) ({archived or 'none'}){kept}"
        )


def prune_runs(
    instance: DagsterInstance, cutoff: datetime, dry_run: bool, max_runs: int
) -> tuple[int, bool]:
    """Finished runs created before ``cutoff``, deleted with their events (``delete_run``) and
    their local files. Returns how many, and whether older ones are left beyond ``max_runs``."""
    old = RunsFilter(statuses=FINISHED, created_before=cutoff)
    done, cursor = 0, None
    while done < max_runs:
        # Deleting empties the page, so the next query starts over; a dry run pages instead.
        page = instance.get_run_records(old, limit=min(PAGE, max_runs - done), cursor=cursor)
        if not page:
            return done, False
        for record in page:
            if not dry_run:
                instance.delete_run(record.dagster_run.run_id)
                remove_run_files(instance, record.dagster_run.run_id)
        done += len(page)
        cursor = page[-1].dagster_run.run_id if dry_run else None
    return done, bool(instance.get_run_records(old, limit=1, cursor=cursor))


def archive_partitions(
    instance: DagsterInstance, db: object, dry_run: bool
) -> tuple[Counter[str], int]:
    """Deletes the partitions of accounts deleted from MongoDB or gone from Instagram.
    A later refresh event for such an account adds its partition back."""
    keys = instance.get_dynamic_partitions(instagram_accounts.name)
    archivable = archivable_accounts(db, keys)
    if dry_run:
        in_flight = partitions_in_flight(instance) if archivable else set()
        archived = [key for key in archivable if key not in in_flight]
    else:
        archived = delete_idle_partitions(instance, instagram_accounts.name, sorted(archivable))
    return Counter(archivable[key].value for key in archived), len(archivable) - len(archived)


def apply_retention(
    instance: DagsterInstance,
    db: object,
    older_than_days: int,
    dry_run: bool = False,
    max_runs: int = DEFAULT_MAX_RUNS,
    now: datetime | None = None,
) -> RetentionReport:
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    runs, more = prune_runs(instance, cutoff, dry_run, max_runs)
    archived, kept = archive_partitions(instance, db, dry_run)
    if runs and not dry_run:
        forget_cached_partition_status(instance, PROFILE_ASSET)
    return RetentionReport(
        cutoff=cutoff,
        dry_run=dry_run,
        runs=runs,
        more_runs_left=more,
        archived=dict(archived),
        kept_active=kept,
    )


class RetentionConfig(Config):
    older_than_days: int = Field(default=settings.default("RUN_RETENTION_DAYS"), ge=0)
    dry_run: bool = False
    max_runs: int = Field(default=DEFAULT_MAX_RUNS, gt=0)


@op(description="Deletes old finished runs with their events; archives gone accounts' partitions.")
def apply_storage_retention(
    context: OpExecutionContext, config: RetentionConfig, mongo: MongoResource
) -> None:
    report = apply_retention(
        context.instance, mongo.db(), config.older_than_days, config.dry_run, config.max_runs
    )
    context.log.info(report.summary())


@job(
    executor_def=in_process_executor,
    description="Bounded storage: prune runs older than RUN_RETENTION_DAYS (DataRefreshLog in "
    "MongoDB stays the long-term record) and archive partitions of deleted or gone accounts.",
)
def storage_retention_job() -> None:
    apply_storage_retention()


@schedule(
    job=storage_retention_job,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Daily storage retention; off until an operator turns it on.",
)
def storage_retention_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    days = settings.int_value("RUN_RETENTION_DAYS")
    return RunRequest(
        run_config=RunConfig(ops={"apply_storage_retention": RetentionConfig(older_than_days=days)})
    )


def retention_command(older_than_days: int | None, dry_run: bool, max_runs: int) -> int:
    """``ig-refresh retention``: the job's work against ``$DAGSTER_HOME`` and ``MONGODB_URI``."""
    uri = settings.value("MONGODB_URI")
    if not uri:
        print("MONGODB_URI is not set: retention reads Account to find gone accounts")
        return 2
    days = settings.int_value("RUN_RETENTION_DAYS") if older_than_days is None else older_than_days
    client = open_client(uri)
    try:
        with DagsterInstance.get() as instance:
            report = apply_retention(
                instance, client[settings.value("MONGODB_DATABASE")], days, dry_run, max_runs
            )
    finally:
        client.close()
    print(report.summary())
    return 0
