"""Freshness kept by Dagster: refresh the accounts most overdue for the freshness target.

Each tick asks the budgets how many background refreshes they admit right now without touching
the events' reserve (``INSTAGRAM_BACKFILL_BUDGET_PERCENT``), subtracts the background runs
already queued or running, and requests that many of the most overdue accounts: never
refreshed first, then the longest-unrefreshed, then the most-followed. Run keys carry the
minimum-interval window, so an account is requested at most once per window even if its run
fails, and again in the next one.
"""

from datetime import UTC, datetime, timedelta

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ig_refresh_dagster.partitions import instagram_accounts, is_account_id
from ig_refresh_dagster.refresh.run.job import instagram_refresh_job
from ig_refresh_dagster.refresh.run.resources import InstagramResource, MongoResource
from ig_refresh_dagster.refresh.run.tags import SOURCE, Source, background_tags
from ig_refresh_dagster.stores.selection import AccountSelector

IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
INTERVAL_SECONDS = 300


def _window(now: datetime, min_interval_hours: int) -> int:
    return int(now.timestamp() // (max(1, min_interval_hours) * 3600))


def _in_flight(context: SensorEvaluationContext, background: int) -> list[str]:
    """Accounts whose freshness run is still queued or running: not asked for twice."""
    if not background:
        return []
    runs = context.instance.get_runs(
        RunsFilter(
            job_name=instagram_refresh_job.name,
            statuses=IN_FLIGHT,
            tags={SOURCE: Source.FRESHNESS.value},
        ),
        limit=background,
    )
    return [r.tags.get("dagster/partition", "") for r in runs]


@sensor(
    job=instagram_refresh_job,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Requests refreshes for the accounts most overdue for INSTAGRAM_FRESHNESS_DAYS, within "
        "the backfill share of the hourly budgets. Start it here to keep accounts fresh "
        "without the platform's cron."
    ),
)
def instagram_freshness_sensor(
    context: SensorEvaluationContext, mongo: MongoResource, instagram: InstagramResource
) -> SensorResult:
    now = datetime.now(UTC)
    capacity = instagram.background_capacity()
    background = context.instance.get_runs_count(
        RunsFilter(
            job_name=instagram_refresh_job.name,
            statuses=IN_FLIGHT,
            tags={SOURCE: [Source.FRESHNESS.value, Source.BACKFILL.value]},
        )
    )
    room = capacity.free_now - background
    if room <= 0:
        return SensorResult(
            skip_reason=(
                f"no budget beyond the events' reserve: {capacity.summary()}; "
                f"{background} background runs queued or running"
            )
        )
    cutoff = now - timedelta(days=instagram.freshness_days)
    overdue = [
        a
        for a in AccountSelector(mongo.db()).overdue(cutoff, room, _in_flight(context, background))
        if is_account_id(a.id)
    ]
    if not overdue:
        return SensorResult(
            skip_reason=f"every account was refreshed within {instagram.freshness_days} days"
        )
    window = _window(now, instagram.min_refresh_interval_hours)
    oldest = overdue[0].last_refresh
    context.log.info(
        f"requesting {len(overdue)} of {room} admissible refreshes; most overdue "
        f"{overdue[0].label} (last refreshed {oldest.isoformat() if oldest else 'never'}); "
        f"{capacity.summary()}"
    )
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"freshness:{a.id}:{window}",
                partition_key=a.id,
                tags=background_tags(Source.FRESHNESS, a.handle),
            )
            for a in overdue
        ],
        dynamic_partitions_requests=[instagram_accounts.build_add_request([a.id for a in overdue])],
    )
