"""The Kafka sensor: reads a bounded slice of the refresh topic each tick and launches runs.

Offsets live in the sensor cursor, which the daemon stores together with the tick's run
requests; a tick that raises is simply re-read by the next one. Run keys come from
``intake/tick_plan.py`` and ``intake/cursor.py``: a used key never stands for a later event.
A message's content never fails a tick: it becomes a run, a coalesced event or a dead letter.

Every wait in a tick is bounded so that even with all of them at their limit it ends inside
Dagster's 60 s evaluation timeout: topic metadata 3 s, group commit 6 s, consumer metadata 3 s,
start offsets 3 s (first tick only), polling ``max_poll_seconds`` (10 s), dead-letter topic
check 3 s and delivery 9 s: 37 s.
"""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from pymongo.errors import PyMongoError

from ig_refresh_dagster.intake.dead_letters import PublishReport
from ig_refresh_dagster.intake.tick_plan import PlannedRun, TickPlan, plan_tick
from ig_refresh_dagster.intake.topic_reader import TopicCursor
from ig_refresh_dagster.refresh.launch.requests import (
    launch_tags,
    partition_requests,
    refresh_request,
)
from ig_refresh_dagster.refresh.run.job import instagram_refresh_job
from ig_refresh_dagster.refresh.run.resources import KafkaResource, MongoResource
from ig_refresh_dagster.refresh.run.tags import PREFIX as TAG_PREFIX
from ig_refresh_dagster.refresh.run.tags import Source
from ig_refresh_dagster.stores.selection import AccountSelector

LISTED = 10


def run_request(run: PlannedRun, handle: str | None = None) -> RunRequest:
    about = {
        f"{TAG_PREFIX}/scheduled-at": run.scheduled_at,
        f"{TAG_PREFIX}/source-offset": run.source,
    }
    if run.coalesced:
        about[f"{TAG_PREFIX}/coalesced-events"] = str(len(run.coalesced))
    if run.replay_of:
        about[f"{TAG_PREFIX}/replay-of"] = run.replay_of
    return refresh_request(
        run.account_id, run.run_key, launch_tags(Source.EVENT, handle), extra=about
    )


def _listing(positions: list[str]) -> str:
    more = len(positions) - LISTED
    return ", ".join(positions[:LISTED]) + (f" and {more} more" if more > 0 else "")


def _log_plan(
    context: SensorEvaluationContext, plan: TickPlan, read: int, report: PublishReport
) -> None:
    for message, rejection in plan.dead_letters:
        context.log.warning(
            f"{message.position} → dead-letter ({rejection.reason.value}): {rejection.detail}"
        )
    for run in plan.runs:
        if run.coalesced:
            context.log.info(
                f"{_listing(run.coalesced)} coalesced into run {run.run_key} "
                f"(same account {run.account_id})"
            )
    truncated = f" ({report.truncated} truncated)" if report.truncated else ""
    context.log.info(
        f"read {read} messages: {len(plan.runs)} runs, {plan.coalesced_count} coalesced, "
        f"{len(plan.dead_letters)} dead-lettered{truncated}"
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
    # Below the daemon's 5 s sensor loop: a tick starts a little after its loop iteration, so
    # with an interval of 5 the next iteration found 4.99 s elapsed and skipped the sensor, and
    # ticks came 10 s apart (measured in benchmarks/latency.py). An idle tick long-polls, so a
    # new tick starts at the first loop iteration after the last one ended.
    minimum_interval_seconds=1,
    description="Polls the Instagram refresh topic; one run per account per tick.",
)
def instagram_refresh_sensor(
    context: SensorEvaluationContext, kafka: KafkaResource, mongo: MongoResource
) -> SensorResult:
    cursor, cursor_note = TopicCursor.parse(context.cursor, kafka.topic)
    if cursor_note:
        context.log.warning(cursor_note)
    with kafka.reader() as reader:
        polled = reader.poll(cursor, kafka.limits())
    for note in polled.notes:
        context.log.warning(note)
    plan = plan_tick(polled.messages, kafka.max_message_bytes)
    # Raises when the dead-letter topic is missing or down: the tick fails, the cursor stays.
    report = kafka.dead_letters().publish(plan.dead_letters) if plan.dead_letters else None
    _log_plan(context, plan, len(polled.messages), report or PublishReport())

    # One key per account (runs are already per account): duplicate keys in one request raise.
    # Keys that already exist are skipped by the daemon itself, which checks each one anyway.
    accounts = sorted({run.account_id for run in plan.runs})
    handles = _handles(context, mongo, accounts)
    requests = [run_request(run, handles.get(run.account_id)) for run in plan.runs]
    return SensorResult(
        run_requests=requests,
        cursor=polled.cursor.to_json(),
        dynamic_partitions_requests=partition_requests(requests),
        skip_reason=_skip_reason(plan, len(polled.messages), kafka.topic),
    )


def _skip_reason(plan: TickPlan, read: int, topic: str) -> str | None:
    """Why a tick requested no run; a tick that only dead-lettered must not look idle."""
    if plan.runs:
        return None
    if not read:
        return f"no new messages on {topic}"
    reasons = sorted({rejection.reason.value for _, rejection in plan.dead_letters})
    return (
        f"read {read} message(s), requested no run: {len(plan.dead_letters)} dead-lettered"
        f" ({', '.join(reasons)})"
    )
