"""The one Graph API transport and its failure taxonomy, shared by every Graph client (Business
Discovery through our own token, insights through an account owner's token), so a given Graph
answer means the same thing to the caller whichever client got it.

The token travels only in the ``Authorization`` header, never in the URL (URLs end up in logs,
proxies and exception text), and every string that goes into an error is scrubbed of it anyway:
Graph's own messages can quote a malformed token back.

Error codes (Graph API "Handling Errors" and "Rate Limits" guides):
- throttling: 4 (app), 17 (user), 32 (page), 613 (custom), 341 (application limit reached),
  368 (temporarily blocked, "wait and retry"), 80000-80014 (Business Use Case limits; 80002 is
  Instagram) -> GraphRateLimited
- 190 (token invalid/expired, any subcode), 102 (API session), 10 and 200-299 (permission)
  -> GraphAuthError
- 110, or any code with subcode 2207013 (Business Discovery: not a business/creator account,
  or no such username) -> GraphAccountUnavailable
- 1, 2 (unknown/service, "temporary issue due to downtime"), HTTP 5xx, timeouts (the whole
  answer within ``timeout`` seconds), connection errors, unreadable bodies -> TransientError
- an answer over ``max_bytes`` -> ResponseTooLarge; a redirect (never followed) -> PermanentError
- anything else -> PermanentError
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ig_refresh_dagster import redaction
from ig_refresh_dagster.instagram.bounded_http import (
    Answer,
    Deadline,
    Label,
    bounded_get,
    host_of,
    new_session,
)
from ig_refresh_dagster.instagram.errors import (
    GraphAccountUnavailable,
    GraphAuthError,
    GraphRateLimited,
    InstagramError,
    PermanentError,
    TransientError,
)
from ig_refresh_dagster.instagram.usage import ApiUsage, parse_usage

# When throttled without an estimate: Platform limits are counted over a rolling hour, so
# after a full hour the calls that caused the throttle have left the window.
DEFAULT_RATE_LIMIT_WAIT_SECONDS = 3600.0

RATE_LIMIT_CODES = frozenset({4, 17, 32, 341, 368, 613, *range(80000, 80015)})
AUTH_CODES = frozenset({10, 102, 190, *range(200, 300)})
ACCOUNT_UNAVAILABLE_CODES = frozenset({110})
ACCOUNT_UNAVAILABLE_SUBCODES = frozenset({2207013})
TRANSIENT_CODES = frozenset({1, 2})
# A Business Discovery answer with a dozen media is tens of kilobytes; insights are smaller.
GRAPH_MAX_BYTES = 1024 * 1024
# Meta access tokens start with "EAA" followed by a long base62 run.
_TOKEN_SHAPED = re.compile(r"EAA[A-Za-z0-9]{16,}")


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def scrub(text: str, token: str) -> str:
    """Remove ``token``, every form and fragment of it and of every other known secret
    (``redaction``), and anything shaped like a Meta token (Graph may quote a cut-off,
    URL-encoded or different one back)."""
    if token:
        text = text.replace(token, "[token]")
        redaction.register(token)
    return _TOKEN_SHAPED.sub("[token]", redaction.redact(text))


def _json_body(answer: Answer, subject: str) -> tuple[dict[str, Any], ApiUsage | None]:
    """The body as a JSON object and the usage headers. A redirect is refused (Graph does not
    send them; following one could carry the token's answer elsewhere), anything else that is
    not a JSON object is a TransientError (a proxy's HTML error page, a truncated body)."""
    usage = parse_usage(answer.headers)
    if answer.location is not None:
        raise PermanentError(
            f"Graph answered HTTP {answer.status} for {subject} with a redirect to "
            f"{host_of(answer.location)}; redirects are never followed",
            reason="graph_redirect",
            usage=usage,
        )
    body = answer.json()
    if not isinstance(body, dict):
        raise TransientError(
            f"Graph answered HTTP {answer.status} for {subject} with a body that is not "
            "a JSON object",
            reason="graph_unreadable",
            usage=usage,
        )
    return body, usage


def error_parts(error: Any, token: str) -> tuple[int | None, int | None, str]:
    """Code, subcode and the scrubbed message of a Graph ``error`` object."""
    error = error if isinstance(error, dict) else {}
    message = scrub(str(error.get("message") or "no message"), token)[:300]
    return as_int(error.get("code")), as_int(error.get("error_subcode")), message


def graph_error(
    subject: str, status: int, error: Any, usage: ApiUsage | None, token: str
) -> InstagramError:
    """The taxonomy class for a Graph error answer (see the module docstring)."""
    code, subcode, message = error_parts(error, token)
    raw_trace = error.get("fbtrace_id") if isinstance(error, dict) else None
    trace = scrub(str(raw_trace or "-"), token)[:40]
    what = (
        f"Graph error for {subject}: HTTP {status}, code {code}"
        f"{f'/{subcode}' if subcode is not None else ''}: {message} (fbtrace_id {trace})"
    )
    if code in RATE_LIMIT_CODES:
        wait = (
            usage.regain_after_seconds
            if usage is not None and usage.regain_after_seconds
            else DEFAULT_RATE_LIMIT_WAIT_SECONDS
        )
        return GraphRateLimited(
            f"{what}; retry in {wait:.0f}s",
            retry_after=wait,
            reason=f"graph_rate_limited_{code}",
            usage=usage,
        )
    if code in AUTH_CODES:
        return GraphAuthError(what, reason=f"graph_auth_{code}", usage=usage)
    if code in ACCOUNT_UNAVAILABLE_CODES or subcode in ACCOUNT_UNAVAILABLE_SUBCODES:
        return GraphAccountUnavailable(what, usage=usage)
    if code in TRANSIENT_CODES or status >= 500:
        return TransientError(what, reason="graph_transient", usage=usage)
    return PermanentError(what, reason="graph_error", usage=usage)


@dataclass(frozen=True)
class GraphAnswer:
    """A Graph answer whose body is a JSON object; ``error`` is set when Graph refused."""

    status: int
    body: dict[str, Any]
    usage: ApiUsage | None
    subject: str

    @property
    def failed(self) -> bool:
        return "error" in self.body or self.status >= 400

    @property
    def error(self) -> Any:
        return self.body.get("error")

    def raise_for_error(self, token: str) -> None:
        if self.failed:
            raise graph_error(self.subject, self.status, self.error, self.usage, token)


class GraphTransport:
    """GET one Graph path with a token: the token in a header only, ``timeout`` seconds in
    total for the whole answer, at most ``max_bytes`` of it, network and body failures raised
    as the taxonomy's classes. ``before_call`` runs before every request (the fleet-wide
    budget charges there)."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        before_call: Callable[[str], None] | None = None,
        max_bytes: int = GRAPH_MAX_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session = new_session()
        self._before_call = before_call

    def get(self, path: str, params: dict[str, str], token: str, subject: str) -> GraphAnswer:
        if self._before_call is not None:
            self._before_call(subject)
        with Deadline(self.timeout) as deadline:
            answer = bounded_get(
                self._session,
                f"{self.base_url}/{path}",
                params=params,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                deadline=deadline,
                max_bytes=self.max_bytes,
                label=Label(f"Graph request for {subject}", "graph", lambda t: scrub(t, token)),
            )
        body, usage = _json_body(answer, subject)
        return GraphAnswer(status=answer.status, body=body, usage=usage, subject=subject)
