"""The stages of one account's refresh: load → fetch → upsert → cache → insights → log.

They run inside one Dagster step (``job.py`` says why). Each stage names itself in any failure
(``failures.classified``), and a retried attempt resumes from the run's saved progress rather
than fetching again: the fetched profile and the account update are kept in the run's
``DataRefreshLog`` entry until it completes. When Instagram makes us wait (both budgets
exhausted, a login wall or "Please wait", a Meta pause) the run does not wait: it ends at once
as DEFERRED and ``deferred_refresh_sensor`` runs the refresh again when the wait is over.
Nothing is written until the answer is proven to be this account's (``prove_identity``).
"""

import contextlib
from datetime import UTC, datetime, timedelta

from dagster import Failure, OpExecutionContext
from pydantic import BaseModel

from ig_refresh_dagster.instagram.errors import (
    AccountGone,
    BudgetExhausted,
    InstagramError,
    ScrapeBlocked,
)
from ig_refresh_dagster.instagram.fetcher import FetchOutcome, ProfileFetcher
from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.refresh.run.failures import TRANSIENT, classified, is_last_attempt
from ig_refresh_dagster.refresh.run.min_interval import name_run, skip_if_recent, skip_if_superseded
from ig_refresh_dagster.refresh.run.outcomes import InsightsOutcome, InsightsStatus
from ig_refresh_dagster.refresh.run.resources import InstagramResource, MongoResource, RedisResource
from ig_refresh_dagster.refresh.run.run_tags import tag_current_run
from ig_refresh_dagster.stores.accounts import RECYCLED_FIELD, AccountRecord, AccountUpdate
from ig_refresh_dagster.stores.insights import owner_auth

# Waits that defer the refresh instead of failing it.
_WAITS = (BudgetExhausted, ScrapeBlocked)
# Retry-After and budget waits are capped: a proxy's "come back tomorrow" must not park a
# refresh for a day; after at most an hour we look again (and defer again if still blocked).
MAX_DEFERRAL_WAIT = timedelta(hours=1)
# A refresh deferred for this long in one chain gives up as FAILED, so nothing waits forever.
DEFERRAL_LIMIT = timedelta(days=3)
OUTCOME_TAG = "ig-refresh/outcome"
_FETCHED, _UPDATED = "fetched", "updated"
HANDLE_RECYCLED, IDENTITY_UNPROVEN = "handle_recycled", "identity_unproven"


class IdentityRefused(Failure):
    """The answer names the handle but is not proven to be this Account's Instagram user:
    nothing is written and the run fails without retry (``reason`` is HANDLE_RECYCLED or
    IDENTITY_UNPROVEN; ``known``/``seen`` are the ids stored and answered)."""

    def __init__(
        self, reason: str, description: str, known: dict[str, str], seen: dict[str, str]
    ) -> None:
        super().__init__(
            description=f"{reason}: {description}",
            metadata={"error_type": type(self).__name__, "reason": reason},
            allow_retries=False,
        )
        self.reason, self.known, self.seen = reason, known, seen


def _now() -> datetime:
    return datetime.now(UTC)


class Refreshed(BaseModel):
    """What a completed refresh did, for the materialization and the asset checks."""

    outcome: FetchOutcome
    update: AccountUpdate
    cache: str
    insights: InsightsOutcome


class AccountRefresh:
    """One attempt at refreshing the run's account (its partition key)."""

    def __init__(
        self,
        context: OpExecutionContext,
        mongo: MongoResource,
        redis: RedisResource,
        instagram: InstagramResource,
    ) -> None:
        self.context, self.mongo, self.redis, self.instagram = context, mongo, redis, instagram

    def run(self) -> Refreshed | None:
        """None when nothing was refreshed (skipped as too recent, or deferred)."""
        log, run_id = self.mongo.refresh_log(), self.context.run_id
        with classified("load account"):
            done = log.progress(run_id) if self.context.retry_number else {}
        account = self.load(resumed=bool(done))
        if account is None:
            return None
        if _FETCHED in done:
            outcome = FetchOutcome.model_validate(done[_FETCHED])
            self.context.log.info("Fetched by an earlier attempt of this run: not fetched again")
        else:
            fetched = self.fetch(account)
            if fetched is None:
                return None
            outcome = fetched
            log.save_progress(run_id, _FETCHED, outcome.model_dump(mode="json"))
        if _UPDATED in done:
            update = AccountUpdate.model_validate(done[_UPDATED])
        else:
            self.prove_identity(account, outcome)
            update = self.upsert(account, outcome)
            log.save_progress(run_id, _UPDATED, update.model_dump())
        cache = self.refresh_cache(account, update)
        insights = self.collect_insights(account, outcome)
        self.write_log(outcome, update, cache, insights)
        return Refreshed(outcome=outcome, update=update, cache=cache, insights=insights)

    def load(self, resumed: bool = False) -> AccountRecord | None:
        """``resumed``: an earlier attempt of this run already did part of the refresh, so the
        account's last refresh may be this run's own and is no reason to skip it."""
        context, account_id = self.context, self.context.partition_key
        if not is_account_id(account_id):
            raise Failure(
                description=(
                    f"partition key {account_id[:64]!r} is not a lower-case 24-hex ObjectId"
                ),
                allow_retries=False,
            )
        with classified("load account"):
            log = self.mongo.refresh_log()
            ended = log.start(context.run_id, account_id, _now())
        if ended is not None:
            context.log.warning(f"An earlier attempt of this run ended it {ended}: not run again")
            return None
        with classified("load account"):
            retried = log.adopt_deferrals(context.run_id, account_id)
            account = self.mongo.accounts().load(account_id)
        if account.username is None:
            raise Failure(
                description=f"Account {account_id} has neither `handle` nor `accountId`",
                allow_retries=False,
            )
        name_run(context, account)
        if not resumed and (
            skip_if_superseded(context, self.mongo, account, retried, _now())
            or skip_if_recent(
                context, self.mongo, account, self.instagram.min_refresh_interval_hours, _now()
            )
        ):
            return None
        retries = f"; retries the deferred run(s) {', '.join(retried)}" if retried else ""
        context.log.info(f"Refreshing @{account.username} (Account {account_id}){retries}")
        return account

    def fetch(self, account: AccountRecord) -> FetchOutcome | None:
        """The profile from Graph or scraping; None when Instagram makes us wait and the
        refresh was deferred: nothing writes the account and the asset is not materialized
        (a materialization would claim fresh data), while the run succeeds, as nothing failed."""
        fetcher = self.instagram.fetcher()
        try:
            with classified("fetch profile"):
                try:
                    outcome = fetcher.fetch(account.username or "")
                except InstagramError as exc:
                    if exc.notes:
                        self.context.log.info("fetch: " + "; ".join(exc.notes))
                    if isinstance(exc, _WAITS):
                        self._defer(account, exc)
                        return None
                    if isinstance(exc, AccountGone):
                        self.mongo.accounts().mark_gone(account.id, _now())
                    raise
        finally:
            self._warn_if_graph_disabled(fetcher)
        self.context.log.info("fetch: " + "; ".join(outcome.notes))
        return outcome

    def _defer(self, account: AccountRecord, exc: BudgetExhausted | ScrapeBlocked) -> None:
        """End the run now as DEFERRED (no run slot held while waiting), or give up as FAILED
        once this refresh has been deferred for ``DEFERRAL_LIMIT``."""
        context, now = self.context, _now()
        log = self.mongo.refresh_log()
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
        # The tag only labels the run: the deferral is stored, and no error may undo it now.
        try:
            tag_current_run(context, {OUTCOME_TAG: "deferred"})
        except Exception as tag_error:
            context.log.warning(f"run not tagged {OUTCOME_TAG}: {type(tag_error).__name__}")
        context.log.warning(
            f"{reason}; refresh DEFERRED until {retry_at:%Y-%m-%d %H:%M:%S} UTC. This run ends "
            "now without writing the account; deferred_refresh_sensor runs it again then."
        )

    def _warn_if_graph_disabled(self, fetcher: ProfileFetcher) -> None:
        """A dead token silently halves what we can read; say so loudly in every run."""
        with contextlib.suppress(*TRANSIENT):
            reason = fetcher.graph_status()
            if reason:
                self.context.log.error(
                    f"Graph API is disabled for every configured credential ({reason}); "
                    "refreshing by scraping only until a token in INSTAGRAM_ACCESS_TOKEN / "
                    "INSTAGRAM_GRAPH_CREDENTIALS is replaced"
                )

    def prove_identity(self, account: AccountRecord, outcome: FetchOutcome) -> None:
        """Instagram's ids of the account, once stored, must be in every answer: an answer
        with another id means someone else now holds the handle (the Account is flagged, and
        nothing else is written); an answer without any id of a numbering already stored
        cannot tell, so it is refused too. That is always the profile page (it carries no
        id) once the JSON endpoint or Graph has answered with one: a stall the operator sees
        (FAILED, ``identity_unproven``) is better than another person's counts written
        silently, and the next refresh that reaches Graph or the JSON endpoint proves it."""
        known, seen = account.user_ids, outcome.profile.user_ids()
        clash = {key: value for key, value in seen.items() if known.get(key, value) != value}
        name = f"@{account.username}"
        if clash:
            was = {key: known[key] for key in clash}
            with classified("prove identity"):
                self.mongo.accounts().mark_recycled(account.id, known, seen, _now())
            raise IdentityRefused(
                HANDLE_RECYCLED,
                f"{name} now answers as Instagram user {clash}, but Account {account.id} is "
                f"{was}: the handle was renamed and taken by someone "
                f"else. Nothing was written; the Account is flagged instagramData."
                f"{RECYCLED_FIELD} until an operator decides",
                known,
                seen,
            )
        if known and not known.keys() & seen.keys():
            raise IdentityRefused(
                IDENTITY_UNPROVEN,
                f"the {outcome.profile.method} answer for {name} carries none of the ids "
                f"Account {account.id} is known by ({', '.join(sorted(known))}), so it cannot "
                "be proven to be the same Instagram user; nothing was written",
                known,
                seen,
            )

    def upsert(self, account: AccountRecord, outcome: FetchOutcome) -> AccountUpdate:
        profile, now = outcome.profile, _now()
        rounded = profile.rounded_counts()
        with classified("upsert account"):
            update = self.mongo.accounts().apply_refresh(
                account.id, profile.to_account_fields(), now, rounded
            )
            self.mongo.history().record(
                account.id,
                now,
                profile.followers_count,
                profile.follows_count,
                profile.media_count,
                rounded=frozenset(rounded),
            )
        return update

    def refresh_cache(self, account: AccountRecord, update: AccountUpdate) -> str:
        if account.cache_id is None:
            return "no-cache-id"
        with classified("refresh cache"):
            return self.redis.cache().refresh(account.cache_id, update.after).value

    def collect_insights(self, account: AccountRecord, outcome: FetchOutcome) -> InsightsOutcome:
        """Yesterday's account insights and lifetime insights of recent media, for accounts
        whose owner authorised the app. Optional: whatever goes wrong is reported in the
        outcome and the refresh completes; a transient error is retried while retries remain
        (the retried attempt resumes after the upsert)."""
        auth = owner_auth(self.mongo.accounts().document(account.id) or {})
        if auth is None:
            return InsightsOutcome(
                status=InsightsStatus.SKIPPED, detail="owner has not authorised the app"
            )
        day = (_now() - timedelta(days=1)).date()
        try:
            insights = self.instagram.insights_client().fetch(
                auth.user_id, auth.access_token, outcome.profile.recent_media, day
            )
            self.mongo.insights().save(account.id, insights, _now())
        except Exception as exc:
            retried = isinstance(exc, TRANSIENT) and not isinstance(exc, BudgetExhausted)
            if retried and not is_last_attempt(self.context, exc):
                raise
            detail = (
                exc.message if isinstance(exc, InstagramError) else f"{type(exc).__name__}: {exc}"
            )
            status = (
                InsightsStatus.SKIPPED
                if isinstance(exc, BudgetExhausted)
                else InsightsStatus.FAILED
            )
            result = InsightsOutcome(status=status, detail=detail[:300], day=day)
            self.context.log.warning(f"Insights {result.summary()}")
            return result
        return InsightsOutcome(
            status=InsightsStatus.STORED,
            detail=f"{day}: {len(insights.metrics)} account metrics, {len(insights.media)} media",
            day=day,
            account_metrics=len(insights.metrics),
            media=len(insights.media),
            unsupported=insights.unsupported,
        )

    def write_log(
        self,
        outcome: FetchOutcome,
        update: AccountUpdate,
        cache: str,
        insights: InsightsOutcome,
    ) -> None:
        with classified("write refresh log"):
            self.mongo.refresh_log().complete(
                self.context.run_id,
                outcome.profile.source,
                update.before,
                update.after,
                _now(),
                [*outcome.notes, f"cache: {cache}"],
                insights=insights.model_dump(mode="json"),
                account_id=self.context.partition_key,
            )
        unsupported = (
            f"; unsupported by this Graph version: {', '.join(insights.unsupported)}"
            if insights.unsupported
            else ""
        )
        self.context.log.info(
            f"Refreshed: changed fields {', '.join(update.changed) or 'none'}; cache entry "
            f"{cache}; insights {insights.summary()}{unsupported}"
        )
