"""The refresh ops: six steps an operator can see, one account per run.

load → fetch → upsert → cache → insights → log. Transient failures (network, 5xx, store
timeouts) are retried with exponential backoff and jitter; permanent ones fail at once with a
readable reason. When Instagram makes us wait (both budgets exhausted, a login wall or "Please
wait", a Meta pause) the run does not wait: it ends at once as DEFERRED and
``deferred_refresh_sensor`` runs the refresh again when the wait is over. Whatever ends the run,
exactly one ``DataRefreshLog`` entry (keyed by run id) tells how.
"""

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from dagster import (
    Backoff,
    Failure,
    HookContext,
    Jitter,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    failure_hook,
    op,
)

from ig_refresh_dagster.instagram.errors import (
    AccountGone,
    BudgetExhausted,
    InstagramError,
    ScrapeBlocked,
    TransientError,
)
from ig_refresh_dagster.instagram.fetcher import FetchOutcome, ProfileFetcher
from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.refresh.min_interval import name_run, skip_if_recent
from ig_refresh_dagster.refresh.outcomes import InsightsOutcome, InsightsStatus
from ig_refresh_dagster.refresh.resources import InstagramResource, MongoResource, RedisResource
from ig_refresh_dagster.refresh.run_tags import tag_current_run
from ig_refresh_dagster.stores.accounts import AccountRecord, AccountUpdate
from ig_refresh_dagster.stores.insights import owner_auth
from ig_refresh_dagster.stores.mongo import STORE_UNAVAILABLE
from ig_refresh_dagster.stores.redis_faults import StoreUnavailable

TRANSIENT_RETRIES = RetryPolicy(
    max_retries=4, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
# Waits that defer the refresh instead of failing it.
_WAITS = (BudgetExhausted, ScrapeBlocked)
# Retry-After and budget waits are capped: a proxy's "come back tomorrow" must not park a
# refresh for a day; after at most an hour we look again (and defer again if still blocked).
MAX_DEFERRAL_WAIT = timedelta(hours=1)
# A refresh deferred for this long in one chain gives up as FAILED, so nothing waits forever.
DEFERRAL_LIMIT = timedelta(days=3)
OUTCOME_TAG = "ig-refresh/outcome"
_TRANSIENT = (
    TransientError,
    StoreUnavailable,
    *STORE_UNAVAILABLE,
    redis.ConnectionError,
    redis.TimeoutError,
)
# Read by Dagster's run retries when the run fails: the instance retries crashed runs only
# (`retry_on_asset_or_op_failure: false` in dagster.yaml); this tag opts one run in.
RETRY_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


def _now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def _classified(context: OpExecutionContext, step: str) -> Iterator[None]:
    """Transient errors propagate for the RetryPolicy; everything else fails without retry."""
    try:
        yield
    except Failure:
        raise
    except _TRANSIENT:
        raise
    except Exception as exc:
        raise Failure(
            description=f"{step}: {exc}",
            metadata={"error_type": type(exc).__name__},
            allow_retries=False,
        ) from None


@op(retry_policy=TRANSIENT_RETRIES, out=Out(AccountRecord, is_required=False))
def load_account(
    context: OpExecutionContext, mongo: MongoResource, instagram: InstagramResource
) -> Iterator[Output[AccountRecord]]:
    account_id = context.partition_key
    if not is_account_id(account_id):
        raise Failure(
            description=f"partition key {account_id[:64]!r} is not a lower-case 24-hex ObjectId",
            allow_retries=False,
        )
    with _classified(context, "load account"):
        log = mongo.refresh_log()
        log.start(context.run_id, account_id, _now())
        retried = log.adopt_deferrals(context.run_id, account_id)
        account = mongo.accounts().load(account_id)
    if retried:
        context.log.info(f"This run retries the deferred refresh of run(s) {', '.join(retried)}")
    if account.username is None:
        raise Failure(
            description=f"Account {account_id} has neither `handle` nor `accountId`",
            allow_retries=False,
        )
    name_run(context, account)
    if skip_if_recent(context, mongo, account, instagram.min_refresh_interval_hours, _now()):
        return
    context.log.info(f"Refreshing @{account.username} (Account {account_id})")
    yield Output(account)


@op(retry_policy=TRANSIENT_RETRIES, out=Out(FetchOutcome, is_required=False))
def fetch_profile(
    context: OpExecutionContext,
    account: AccountRecord,
    instagram: InstagramResource,
    mongo: MongoResource,
) -> Iterator[Output[FetchOutcome]]:
    """The profile from Graph or scraping. When Instagram makes us wait, the refresh is
    deferred and this step yields no output: the later steps are skipped, so nothing writes
    the account and the asset is not materialized (nothing was refreshed; a materialization
    would claim fresh data), while the run itself succeeds, as nothing failed."""
    fetcher = instagram.fetcher()
    try:
        with _classified(context, "fetch profile"):
            try:
                outcome = fetcher.fetch(account.username or "")
            except InstagramError as exc:
                for note in exc.notes:
                    context.log.info(note)
                if isinstance(exc, _WAITS):
                    _defer(context, mongo, account, exc)
                    return
                if isinstance(exc, AccountGone):
                    mongo.accounts().mark_gone(account.id, _now())
                raise
    finally:
        _warn_if_graph_disabled(context, fetcher)
    for note in outcome.notes:
        context.log.info(note)
    yield Output(outcome)


def _defer(
    context: OpExecutionContext,
    mongo: MongoResource,
    account: AccountRecord,
    exc: BudgetExhausted | ScrapeBlocked,
) -> None:
    """End the run now as DEFERRED (no run slot held while waiting), or give up as FAILED
    once this refresh has been deferred for ``DEFERRAL_LIMIT``."""
    now = _now()
    log = mongo.refresh_log()
    since = log.deferred_since(context.run_id) or now
    reason = f"fetch profile: {exc.message}"
    if now - since >= DEFERRAL_LIMIT:
        raise Failure(
            description=(
                f"gave up: deferred since {since:%Y-%m-%d %H:%M} UTC, longer than "
                f"{DEFERRAL_LIMIT.days} days; last reason: {reason}"
            ),
            metadata={"error_type": "DeferralLimit"},
            allow_retries=False,
        )
    retry_at = now + min(timedelta(seconds=exc.retry_after), MAX_DEFERRAL_WAIT)
    log.defer(context.run_id, account.id, reason, retry_at, since, now, exc.notes)
    tag_current_run(context, {OUTCOME_TAG: "deferred"})
    context.log.warning(
        f"{reason}; refresh DEFERRED until {retry_at:%Y-%m-%d %H:%M:%S} UTC. This run ends "
        "now without writing the account; deferred_refresh_sensor runs it again then."
    )


def _warn_if_graph_disabled(context: OpExecutionContext, fetcher: ProfileFetcher) -> None:
    """A dead token silently halves what we can read; say so loudly in every run."""
    with contextlib.suppress(*_TRANSIENT):
        reason = fetcher.graph_status()
        if reason:
            context.log.error(
                f"Graph API is disabled for the configured token ({reason}); refreshing by "
                "scraping only until INSTAGRAM_ACCESS_TOKEN is replaced"
            )


@op(retry_policy=TRANSIENT_RETRIES)
def upsert_account(
    context: OpExecutionContext,
    account: AccountRecord,
    outcome: FetchOutcome,
    mongo: MongoResource,
) -> AccountUpdate:
    profile, now = outcome.profile, _now()
    with _classified(context, "upsert account"):
        update = mongo.accounts().apply_refresh(account.id, profile.to_account_fields(), now)
        mongo.history().record(
            account.id, now, profile.followers_count, profile.follows_count, profile.media_count
        )
    context.log.info(f"Changed fields: {', '.join(update.changed) or 'none'}")
    return update


@op(retry_policy=TRANSIENT_RETRIES)
def refresh_cache(
    context: OpExecutionContext,
    account: AccountRecord,
    update: AccountUpdate,
    redis: RedisResource,
) -> str:
    if account.cache_id is None:
        context.log.info("Account has no `accountId` field, so it has no cache entry")
        return "no-cache-id"
    with _classified(context, "refresh cache"):
        outcome = redis.cache().refresh(account.cache_id, update.after)
    context.log.info(f"Cache entry: {outcome.value}")
    return outcome.value


@op(retry_policy=TRANSIENT_RETRIES)
def collect_insights(
    context: OpExecutionContext,
    account: AccountRecord,
    outcome: FetchOutcome,
    instagram: InstagramResource,
    mongo: MongoResource,
) -> InsightsOutcome:
    """Yesterday's account insights and lifetime insights of recent media, for accounts whose
    owner authorised the app. Optional: whatever goes wrong is reported in the outcome and the
    refresh completes; a transient error is retried while retries remain."""
    auth = owner_auth(mongo.accounts().document(account.id) or {})
    if auth is None:
        result = InsightsOutcome(
            status=InsightsStatus.SKIPPED, detail="owner has not authorised the app"
        )
        context.log.info(f"Insights {result.summary()} (no instagramAuth)")
        return result
    day = (_now() - timedelta(days=1)).date()
    try:
        insights = instagram.insights_client().fetch(
            auth.user_id, auth.access_token, outcome.profile.recent_media, day
        )
        mongo.insights().save(account.id, insights, _now())
    except Exception as exc:
        retrying = (
            isinstance(exc, _TRANSIENT) and context.retry_number < TRANSIENT_RETRIES.max_retries
        )
        if retrying and not isinstance(exc, BudgetExhausted):
            raise
        detail = exc.message if isinstance(exc, InstagramError) else f"{type(exc).__name__}: {exc}"
        status = (
            InsightsStatus.SKIPPED if isinstance(exc, BudgetExhausted) else InsightsStatus.FAILED
        )
        result = InsightsOutcome(status=status, detail=detail[:300], day=day)
        context.log.warning(f"Insights {result.summary()}")
        return result
    result = InsightsOutcome(
        status=InsightsStatus.STORED,
        detail=f"{day}: {len(insights.metrics)} account metrics, {len(insights.media)} media",
        day=day,
        account_metrics=len(insights.metrics),
        media=len(insights.media),
        unsupported=insights.unsupported,
    )
    unsupported = f"; unsupported by this Graph version: {', '.join(insights.unsupported)}"
    context.log.info(f"Insights {result.summary()}{unsupported if insights.unsupported else ''}")
    return result


@op(retry_policy=TRANSIENT_RETRIES)
def write_refresh_log(
    context: OpExecutionContext,
    outcome: FetchOutcome,
    update: AccountUpdate,
    cache: str,
    insights: InsightsOutcome,
    mongo: MongoResource,
) -> Output[dict[str, Any]]:
    profile = outcome.profile
    notes = [*outcome.notes, f"cache: {cache}"]
    with _classified(context, "write refresh log"):
        # Upserts with the entry's identity: a re-execution that skipped load_account has
        # written nothing yet.
        mongo.refresh_log().complete(
            context.run_id,
            profile.source,
            update.before,
            update.after,
            _now(),
            notes,
            insights=insights.model_dump(mode="json"),
            account_id=context.partition_key,
        )
    numbers = {
        "followers": profile.followers_count,
        "following": profile.follows_count,
        "media_count": profile.media_count,
        "engagement_rate": profile.engagement_rate,
    }
    summary = {
        "username": profile.username,
        "source": profile.source,
        "method": profile.method,
        "changed_fields": update.changed,
        "cache": cache,
        "insights": insights.summary(),
        **numbers,
    }
    # Unknown numbers are left out rather than plotted as 0.
    metadata = {k: v for k, v in numbers.items() if v is not None}
    return Output(
        summary,
        metadata={
            **metadata,
            "username": profile.username,
            "source": profile.source,
            "method": profile.method,
            "changed_fields": ", ".join(update.changed) or "none",
            "cache": cache,
            "insights": insights.summary(),
        },
    )


def _failure_text(context: HookContext) -> str:
    exc = context.op_exception
    if isinstance(exc, Failure):
        return exc.description or "failed"
    return f"{context.op.name}: {type(exc).__name__}: {exc}" if exc else f"{context.op.name} failed"


@failure_hook(required_resource_keys={"mongo"})
def record_refresh_failure(context: HookContext) -> None:
    """Once a step has failed for good (not on its retries). A transient cause (a store or
    network outage that outlasted the step's retries) is an infrastructure failure, so the run
    asks Dagster for a run retry; a permanent one (unknown account, gone profile) does not.
    Then the run's entry turns FAILED; if MongoDB is still down, the log reconciler
    (run_status.py) closes it once MongoDB answers."""
    transient = isinstance(context.op_exception, _TRANSIENT)
    if transient:
        context.instance.add_run_tags(context.run_id, {RETRY_STEP_FAILURE_TAG: "true"})
    run = context.instance.get_run_by_id(context.run_id)
    account_id = run.tags.get("dagster/partition", "") if run else ""
    if not is_account_id(account_id):
        return
    error = _failure_text(context) + ("; run retry requested" if transient else "")
    try:
        context.resources.mongo.refresh_log().fail(context.run_id, account_id, error, _now())
    except STORE_UNAVAILABLE as exc:
        context.log.warning(
            f"DataRefreshLog entry not written ({type(exc).__name__}): the log reconciler "
            "closes it once MongoDB answers"
        )
