"""``backfill_summary_sensor``: when a backfill of ``instagram_profile`` ends, its outcome table
appears on the asset's page (an observation with Markdown metadata and a link to the backfill),
where an analyst looks, instead of only Dagster's per-partition success grid."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetObservation,
    DefaultSensorStatus,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from ig_refresh_dagster.refresh.launch.backfill_report import BackfillNotFound, backfill_report
from ig_refresh_dagster.refresh.run.job import instagram_profile
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.mongo import STORE_UNAVAILABLE

ENDED = [
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
]
# Backfills created this long before the newest one summarised are still looked at: a long
# backfill ends after shorter ones created later.
LOOKBACK = timedelta(days=30)
# Summarised ids kept in the cursor, so each backfill is summarised once.
REMEMBERED = 500


def _cursor(raw: str | None) -> list[str]:
    try:
        done = json.loads(raw or "[]")
    except ValueError:
        return []
    return [i for i in done if isinstance(i, str)] if isinstance(done, list) else []


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "When a backfill of instagram_profile ends, records its outcome table (COMPLETED, "
        "SKIPPED, DEFERRED, FAILED per account) as an observation on the asset."
    ),
)
def backfill_summary_sensor(context: SensorEvaluationContext, mongo: MongoResource) -> SensorResult:
    done = _cursor(context.cursor)
    ended = context.instance.get_backfills(
        filters=BulkActionsFilter(statuses=ENDED, created_after=datetime.now(UTC) - LOOKBACK),
        limit=REMEMBERED,
    )
    events = []
    try:
        for backfill in ended:
            if backfill.backfill_id in done:
                continue
            try:
                report = backfill_report(context.instance, mongo.db(), backfill.backfill_id)
            except BackfillNotFound:  # another asset's or a job's backfill
                done.append(backfill.backfill_id)
                continue
            events.append(
                AssetObservation(
                    asset_key=instagram_profile.key,
                    description=f"backfill {report.backfill_id}: {report.title or ''}",
                    metadata={
                        "backfill_id": report.backfill_id,
                        "dagster_status": report.dagster_status,
                        "accounts": len(report.accounts),
                        **{o.lower(): n for o, n in report.counts().items()},
                        "outcomes": MetadataValue.md(report.markdown()),
                        "backfill": MetadataValue.url(report.page),
                    },
                )
            )
            done.append(backfill.backfill_id)
    except STORE_UNAVAILABLE as exc:
        context.log.warning(f"MongoDB unreachable ({type(exc).__name__}); summarised next tick")
    return SensorResult(
        asset_events=events,
        cursor=json.dumps(done[-REMEMBERED:]),
        skip_reason=None if events else "no backfill ended since the last summary",
    )
