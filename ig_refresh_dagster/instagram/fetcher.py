"""One profile fetch: Graph first when it can answer, scraping otherwise, both within budget.

Graph is preferred (exact counts, recent media, sanctioned), but only when a credential is
configured, the account is not known to be invisible to Business Discovery, and a credential
that is not known to be dead has room in its own fleet-wide hourly budget. The credentials are
tried in rotation (``graph_pool``); one that is throttled or revoked is sidelined on its own and
the next one is asked. Every Graph answer's usage headers are honoured by pausing that
credential's budget before Meta throttles it. When no credential can answer, scraping does,
within its own budget. When neither may be called, BudgetExhausted says how long to wait.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

from ig_refresh_dagster.instagram.errors import (
    BudgetExhausted,
    BudgetUnavailable,
    GraphAccountUnavailable,
    GraphAuthError,
    GraphRateLimited,
    InstagramError,
    ScrapeBlocked,
    TransientError,
)
from ig_refresh_dagster.instagram.graph_pool import (
    Budget,
    CredentialState,
    GraphLane,
    GraphPool,
    Memory,
)
from ig_refresh_dagster.instagram.models import InstagramProfile
from ig_refresh_dagster.instagram.scrape import ProfileScraper
from ig_refresh_dagster.instagram.usage import ApiUsage
from ig_refresh_dagster.instagram.usernames import validate_username

log = logging.getLogger(__name__)

# Scrape blocks about request rate (not about this client being walled off for one profile).
_SCRAPE_RATE_BLOCKS = frozenset({"scrape_rate_limited", "scrape_please_wait"})


class FetchOutcome(BaseModel):
    profile: InstagramProfile
    notes: list[str]


class _Attempt:
    """What the Graph step left behind for the scrape step to decide with."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.waits: list[float] = []
        self.graph_transient: TransientError | None = None


class ProfileFetcher:
    def __init__(
        self,
        graph: GraphPool,
        scraper: ProfileScraper,
        scrape_budget: Budget,
        memory: Memory,
        usage_threshold_percent: float = 90.0,
        not_business_ttl_seconds: int = 7 * 24 * 3600,
        high_usage_block_seconds: float = 600.0,
        pause_scraping_on_rate_block: bool = False,
    ) -> None:
        self._pool = graph
        self._scraper = scraper
        self._scrape_budget = scrape_budget
        self._memory = memory
        self.usage_threshold_percent = usage_threshold_percent
        self.not_business_ttl_seconds = not_business_ttl_seconds
        # Usage over the threshold without Meta's estimate: usage is counted over a rolling
        # hour, so a pause of a fraction of it lets the oldest calls age out.
        self.high_usage_block_seconds = high_usage_block_seconds
        # Instagram rate-limits anonymous reads per IP, so once it says "wait" every further
        # request from this fleet only extends the block: optionally stop all scraping until
        # it lifts. Off by default, because it turns one account's block into everyone's wait.
        self.pause_scraping_on_rate_block = pause_scraping_on_rate_block

    def graph_status(self) -> str | None:
        """None while some configured credential is not disabled (or none is configured);
        otherwise why each one is, by fingerprint."""
        return self._pool.status()

    def pool_status(self) -> list[CredentialState]:
        """Each credential by fingerprint: disabled reason, budget use, pause."""
        return self._pool.states()

    def fetch(self, raw_username: str) -> FetchOutcome:
        name = validate_username(raw_username)
        attempt = _Attempt()
        try:
            profile = self._try_graph(name, attempt)
            if profile is None:
                profile = self._scrape(name, attempt)
        except InstagramError as exc:
            exc.notes = attempt.notes
            log.info("fetch of @%s failed (%s): %s", name, exc.reason, "; ".join(attempt.notes))
            raise
        log.info("fetched @%s via %s: %s", name, profile.method, "; ".join(attempt.notes))
        return FetchOutcome(profile=profile, notes=attempt.notes)

    # -- Graph --------------------------------------------------------------------------------

    def _try_graph(self, name: str, attempt: _Attempt) -> InstagramProfile | None:
        if not self._pool:
            attempt.notes.append("graph skipped: not configured")
            return None
        if self._memory.is_not_business(name):
            attempt.notes.append(
                f"graph skipped: @{name} is remembered as not a business/creator account"
            )
            return None
        for lane in self._pool.rotation():
            profile, try_next = self._try_lane(lane, name, attempt)
            if profile is not None or not try_next:
                return profile
        return None

    def _try_lane(
        self, lane: GraphLane, name: str, attempt: _Attempt
    ) -> tuple[InstagramProfile | None, bool]:
        """(the profile, or None; whether another credential may still answer)."""
        notes, fingerprint = attempt.notes, lane.fingerprint
        disabled = self._pool.disabled_reason(lane)
        if disabled:
            notes.append(f"graph skipped: disabled for credential {fingerprint} ({disabled})")
            return None, True
        try:
            wait = lane.budget.try_acquire()
        except BudgetUnavailable as exc:
            # Every credential's budget lives in the same store: asking the next one is futile.
            notes.append(f"graph refused: {exc.message}")
            return None, False
        if wait > 0:
            attempt.waits.append(wait)
            notes.append(
                f"graph skipped: hourly budget exhausted for credential {fingerprint}, "
                f"capacity in {wait:.0f}s"
            )
            return None, True
        try:
            result = lane.client.fetch(name)
        except InstagramError as exc:
            self._observe_usage(lane, exc.usage, notes)
            return None, self._graph_failed(name, lane, exc, attempt)
        self._observe_usage(lane, result.usage, notes)
        notes.append(f"fetched via Graph business discovery (credential {fingerprint})")
        return result.profile, False

    def _graph_failed(
        self, name: str, lane: GraphLane, exc: InstagramError, attempt: _Attempt
    ) -> bool:
        """Record what the failure means; True when it concerns only this credential."""
        notes, fingerprint = attempt.notes, lane.fingerprint
        if isinstance(exc, GraphRateLimited):
            attempt.waits.append(exc.retry_after)
            self._block_graph(lane, exc.retry_after, exc.reason, notes)
            notes.append(
                f"graph rate limited, credential {fingerprint} paused for "
                f"{exc.retry_after:.0f}s: {exc.message}"
            )
            return True
        if isinstance(exc, GraphAuthError):
            self._memory.disable_graph(fingerprint, f"{exc.reason}: {exc.message}"[:300])
            notes.append(f"graph disabled for credential {fingerprint}: {exc.message}")
            return True
        if isinstance(exc, GraphAccountUnavailable):
            self._memory.remember_not_business(name, self.not_business_ttl_seconds)
            notes.append(f"graph cannot see @{name} (not a business/creator account): scraping")
        elif isinstance(exc, TransientError):
            attempt.graph_transient = exc
            notes.append(f"graph failed, will retry later: {exc.message}")
        else:
            notes.append(f"graph failed: {exc.message}")
        return False

    def _observe_usage(self, lane: GraphLane, usage: ApiUsage | None, notes: list[str]) -> None:
        if usage is None or usage.max_percent is None:
            return
        if usage.max_percent < self.usage_threshold_percent:
            return
        seconds = usage.regain_after_seconds or self.high_usage_block_seconds
        reason = f"graph usage {usage.max_percent:.0f}% >= {self.usage_threshold_percent:.0f}%"
        self._block_graph(lane, seconds, reason, notes)
        notes.append(f"{reason}: credential {lane.fingerprint} paused for {seconds:.0f}s")

    def _block_graph(self, lane: GraphLane, seconds: float, reason: str, notes: list[str]) -> None:
        try:
            lane.budget.block_for(seconds, reason)
        except BudgetUnavailable as exc:
            notes.append(f"could not pause credential {lane.fingerprint} ({reason}): {exc.message}")

    # -- scrape -------------------------------------------------------------------------------

    def _scrape(self, name: str, attempt: _Attempt) -> InstagramProfile:
        notes = attempt.notes
        try:
            wait = self._scrape_budget.try_acquire()
        except BudgetUnavailable as exc:
            notes.append(f"scrape refused: {exc.message}")
            raise attempt.graph_transient or exc from None
        if wait > 0:
            notes.append(f"scrape skipped: hourly budget exhausted, capacity in {wait:.0f}s")
            if attempt.graph_transient is not None:
                raise attempt.graph_transient
            retry_after = min([*attempt.waits, wait])
            raise BudgetExhausted(
                f"neither Graph nor scraping may be called for @{name} now; "
                f"retry in {retry_after:.0f}s ({'; '.join(notes)})",
                retry_after=retry_after,
            )
        try:
            profile = self._scraper.fetch(name, charge=self._scrape_budget.try_acquire)
        except ScrapeBlocked as exc:
            if self.pause_scraping_on_rate_block and exc.reason in _SCRAPE_RATE_BLOCKS:
                self._block_scrape(exc.retry_after, exc.reason, notes)
            notes.append(f"scrape blocked: {exc.message}")
            raise
        except InstagramError as exc:
            notes.append(f"scrape failed: {exc.message}")
            raise
        notes.append(f"fetched by scraping ({profile.method})")
        return profile

    def _block_scrape(self, seconds: float, reason: str, notes: list[str]) -> None:
        try:
            self._scrape_budget.block_for(seconds, reason)
        except BudgetUnavailable as exc:
            notes.append(f"could not pause scraping ({reason}): {exc.message}")
        else:
            notes.append(f"scraping paused for {seconds:.0f}s")
