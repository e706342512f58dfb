"""Asset checks on ``instagram_profile``, evaluated by every refresh and shown in the UI.

They warn rather than fail: a refresh that wrote what Instagram said is still a refresh, but an
operator should look at a follower count that jumped, a profile a scrape could only half read,
or a fleet that lost its Graph token. The exception is ``account_identity``, evaluated only by a
refresh that refused to write (each evaluation costs event-log rows on every run, and a proven
answer is the norm): a handle now answering as another Instagram user is an ERROR.
"""

import contextlib
from collections.abc import Iterator

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec
from pydantic import BaseModel

from ig_refresh_dagster.instagram.models import InstagramProfile
from ig_refresh_dagster.refresh.run.resources import InstagramResource
from ig_refresh_dagster.stores.accounts import AccountUpdate

ASSET = "instagram_profile"
FOLLOWER_JUMP = "follower_jump"
PROFILE_COMPLETE = "profile_complete"
GRAPH_ENABLED = "graph_enabled"
ACCOUNT_IDENTITY = "account_identity"

CHECK_SPECS = [
    AssetCheckSpec(
        FOLLOWER_JUMP,
        asset=ASSET,
        description="Followers moved by more than 20 % and more than 1,000 since the last refresh.",
    ),
    AssetCheckSpec(
        PROFILE_COMPLETE,
        asset=ASSET,
        description="Every count and the display name were read (a partial scrape leaves some "
        "unknown, and unknown values are never written).",
    ),
    AssetCheckSpec(
        GRAPH_ENABLED,
        asset=ASSET,
        description="Graph is usable for at least one configured credential (else every "
        "account is scraped).",
    ),
    AssetCheckSpec(
        ACCOUNT_IDENTITY,
        asset=ASSET,
        description="Evaluated when a refresh refused an answer as not this Account's: ERROR "
        "when the handle now answers as another Instagram user (instagramData.handleRecycled), "
        "WARN when the answer carried none of the stored ids.",
    ),
]
# Fields a complete profile has; a scrape of the HTML page may leave some unknown.
COMPLETE_FIELDS = ("followers_count", "follows_count", "media_count", "name")


class JumpRule(BaseModel):
    """A change counts as a jump only when it is large both relatively and absolutely, so a
    small account gaining 50 followers is not flagged."""

    min_ratio: float = 0.2
    min_absolute: int = 1000


def follower_jump(before: int | None, after: int | None, rule: JumpRule) -> AssetCheckResult:
    if before is None or after is None:
        return AssetCheckResult(
            check_name=FOLLOWER_JUMP,
            asset_key=ASSET,
            passed=True,
            description="no earlier or no new follower count to compare",
        )
    change = after - before
    ratio = abs(change) / before if before else float("inf")
    jumped = abs(change) > rule.min_absolute and ratio > rule.min_ratio
    return AssetCheckResult(
        check_name=FOLLOWER_JUMP,
        asset_key=ASSET,
        passed=not jumped,
        severity=AssetCheckSeverity.WARN,
        metadata={"before": before, "after": after, "change": change},
        description=(
            f"followers {before} → {after} ({change:+d}, {ratio:.0%})"
            if jumped
            else f"followers {before} → {after}"
        ),
    )


def profile_complete(profile: InstagramProfile) -> AssetCheckResult:
    unknown = [field for field in COMPLETE_FIELDS if getattr(profile, field) is None]
    return AssetCheckResult(
        check_name=PROFILE_COMPLETE,
        asset_key=ASSET,
        passed=not unknown,
        severity=AssetCheckSeverity.WARN,
        metadata={"method": profile.method, "unknown": ", ".join(unknown) or "none"},
        description=(
            f"{profile.method} left unknown: {', '.join(unknown)}" if unknown else "complete"
        ),
    )


def graph_enabled(disabled_reason: str | None) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=GRAPH_ENABLED,
        asset_key=ASSET,
        passed=disabled_reason is None,
        severity=AssetCheckSeverity.WARN,
        description=f"Graph disabled: {disabled_reason}" if disabled_reason else "enabled",
    )


def identity_refused(reason: str, description: str, known: dict, seen: dict) -> AssetCheckResult:
    """The refresh wrote nothing: ERROR for a recycled handle, WARN when unproven."""
    return AssetCheckResult(
        check_name=ACCOUNT_IDENTITY,
        asset_key=ASSET,
        passed=False,
        severity=AssetCheckSeverity.ERROR
        if reason == "handle_recycled"
        else AssetCheckSeverity.WARN,
        metadata={"reason": reason, "known_ids": str(known), "seen_ids": str(seen)},
        description=description[:1000],
    )


def _followers(snapshot: dict) -> int | None:
    value = snapshot.get("followerCount")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def profile_checks(
    profile: InstagramProfile, update: AccountUpdate, instagram: InstagramResource
) -> Iterator[AssetCheckResult]:
    """Evaluated after the log entry is written, so checks describe what was stored."""
    yield follower_jump(_followers(update.before), _followers(update.after), JumpRule())
    yield profile_complete(profile)
    reason = None
    with contextlib.suppress(Exception):
        # The status read is informational; a Redis hiccup must not fail a finished refresh.
        reason = instagram.fetcher().graph_status()
    yield graph_enabled(reason)
