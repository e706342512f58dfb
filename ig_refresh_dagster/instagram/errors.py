"""Failure taxonomy of the fetch layer.

Each class tells the caller what to do next (retry later, give up, fall back to scraping, stop
using Graph), so callers branch on the class, never on message text. Messages are for humans and
never contain the access token: the Graph client scrubs every string before it builds an error,
and every message passes through ``redaction`` (any known secret, in any form) on the way in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ig_refresh_dagster.redaction import redact

if TYPE_CHECKING:
    from ig_refresh_dagster.instagram.usage import ApiUsage


class InstagramError(Exception):
    """Base class; ``reason`` is a short machine code for metrics and run metadata, ``notes``
    the fetcher's account of what it tried before this error ended the fetch."""

    default_reason = "instagram_error"

    def __init__(
        self, message: str, *, reason: str | None = None, usage: ApiUsage | None = None
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.usage = usage
        self.notes: list[str] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class TransientError(InstagramError):
    """Network trouble, timeouts, 5xx, Graph codes 1/2, unreadable bodies: retry with backoff."""

    default_reason = "transient"


class PermanentError(InstagramError):
    """Anything not known to be transient: retrying the same request will not help."""

    default_reason = "permanent"


class InvalidUsername(PermanentError):
    default_reason = "invalid_username"


class ResponseTooLarge(PermanentError):
    """The answer was bigger than any real one: it was refused after ``max_bytes`` were read,
    so a hostile or broken server cannot fill memory. Asking again would get the same."""

    default_reason = "response_too_large"


class MalformedAnswer(PermanentError):
    """A value in the answer breaks its contract (a count that is negative, beyond
    ``counts.MAX_COUNT``, a bool, a float, or a string of other than ASCII digits; a field of
    the wrong type): nothing of the answer is used, and the fetcher scrapes instead, as for any
    Graph answer it cannot use."""

    default_reason = "malformed_answer"


class ProfileMismatch(PermanentError):
    """The answer does not prove it is about the account asked for (its ``og:url``, canonical
    link or username names someone else, or names no one): nothing of it may be written."""

    default_reason = "profile_mismatch"


class AccountGone(PermanentError):
    """The public profile page answers 404: the account was deleted or renamed."""

    default_reason = "account_gone"


class GraphRateLimited(InstagramError):
    """Graph throttled us; ``retry_after`` seconds until the quota is back."""

    default_reason = "graph_rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        reason: str | None = None,
        usage: ApiUsage | None = None,
    ) -> None:
        super().__init__(message, reason=reason, usage=usage)
        self.retry_after = retry_after


class GraphAuthError(InstagramError):
    """Token invalid/expired (190) or permission missing (10, 200-299): Graph is unusable for
    every account until the token changes."""

    default_reason = "graph_auth"


class GraphAccountUnavailable(InstagramError):
    """Business Discovery cannot see this account (personal account, unknown username):
    scraping is the only way to read it."""

    default_reason = "graph_account_unavailable"


class ScrapeBlocked(TransientError):
    """Instagram refused the anonymous request (login wall, 429, "Please wait a few minutes",
    consent or challenge page)."""

    default_reason = "scrape_blocked"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class BudgetExhausted(InstagramError):
    """Neither Graph nor scraping may be called now; ``retry_after`` is the shortest wait."""

    default_reason = "budget_exhausted"

    def __init__(self, message: str, *, retry_after: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class BudgetUnavailable(TransientError):
    """The budget store (Redis) is unreachable: refuse the call rather than run unlimited."""

    default_reason = "budget_unavailable"
