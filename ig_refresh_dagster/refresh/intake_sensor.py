"""The Kafka sensor: reads a bounded slice of the refresh topic each tick and launches runs.

Offsets live in the sensor cursor, which the daemon stores together with the tick's run
requests; a tick that raises is simply re-read by the next one. Run keys are
``topic:partition:offset`` because Dagster skips a run key forever once used.
"""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from pymongo.errors import PyMongoError

from ig_refresh_dagster.intake.tick_plan import PlannedRun, TickPlan, plan_tick
from ig_refresh_dagster.intake.topic_reader import TopicCursor
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.job import instagram_refresh_job
from ig_refresh_dagster.refresh.resources import KafkaResource, MongoResource
from ig_refresh_dagster.refresh.tags import PREFIX as TAG_PREFIX
from ig_refresh_dagster.refresh.tags import event_tags
from ig_refresh_dagster.stores.selection import AccountSelector


def _run_request(run: PlannedRun, handle: str | None) -> RunRequest:
    tags = {
        **event_tags(handle),
        f"{TAG_PREFIX}/scheduled-at": run.scheduled_at,
        f"{TAG_PREFIX}/source-offset": run.run_key,
    }
    if run.coalesced:
        tags[f"{TAG_PREFIX}/coalesced-events"] = str(len(run.coalesced))
    return RunRequest(run_key=run.run_key, partition_key=run.account_id, tags=tags)


def _log_plan(context: SensorEvaluationContext, plan: TickPlan, read: int) -> None:
    for message, rejection in plan.dead_letters:
        context.log.warning(
            f"{message.source} → dead-letter ({rejection.reason.value}): {rejection.detail}"
        )
    for run in plan.runs:
        if run.coalesced:
            context.log.info(
                f"{', '.join(run.coalesced)} coalesced into run {run.run_key} "
                f"(same account {run.account_id})"
            )
    context.log.info(
        f"read {read} messages: {len(plan.runs)} runs, {plan.coalesced_count} coalesced, "
        f"{len(plan.dead_letters)} dead-lettered"
    )


def _handles(
    context: SensorEvaluationContext, mongo: MongoResource, accounts: list[str]
) -> dict[str, str]:
    """One query for the whole tick. The handle only labels the run (the run tags itself when
    it starts), so a store outage must not hold up intake."""
    if not accounts:
        return {}
    try:
        return AccountSelector(mongo.db()).handles(accounts)
    except PyMongoError as exc:
        context.log.warning(f"runs requested without handles, MongoDB did not answer: {exc}")
        return {}


@sensor(
    job=instagram_refresh_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="Polls the Instagram refresh topic; one run per account per tick.",
)
def instagram_refresh_sensor(
    context: SensorEvaluationContext, kafka: KafkaResource, mongo: MongoResource
) -> SensorResult:
    cursor, cursor_note = TopicCursor.parse(context.cursor, kafka.topic)
    if cursor_note:
        context.log.warning(cursor_note)
    with kafka.reader() as reader:
        # The cursor we were handed is durable (the daemon saved it after the last good tick).
        reader.commit(cursor)
        polled = reader.poll(cursor, kafka.limits())
    for note in polled.notes:
        context.log.warning(note)
    plan = plan_tick(polled.messages, kafka.max_message_bytes)
    if plan.dead_letters:
        kafka.dead_letters().publish(plan.dead_letters)
    _log_plan(context, plan, len(polled.messages))

    # One key per account (runs are already per account): duplicate keys in one request raise.
    # Keys that already exist are skipped by the daemon itself, which checks each one anyway.
    accounts = [run.account_id for run in plan.runs]
    handles = _handles(context, mongo, accounts)
    return SensorResult(
        run_requests=[_run_request(run, handles.get(run.account_id)) for run in plan.runs],
        cursor=polled.cursor.to_json(),
        dynamic_partitions_requests=(
            [instagram_accounts.build_add_request(accounts)] if accounts else []
        ),
        skip_reason=None if polled.messages else f"no new messages on {kafka.topic}",
    )
