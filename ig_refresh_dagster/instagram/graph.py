"""Instagram Graph API Business Discovery: one GET per profile, errors mapped to the taxonomy.

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
- 1, 2 (unknown/service, "temporary issue due to downtime"), HTTP 5xx, timeouts, connection
  errors, unreadable bodies -> TransientError
- anything else -> PermanentError
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import requests
from pydantic import BaseModel, ValidationError

from ig_refresh_dagster.instagram.errors import (
    GraphAccountUnavailable,
    GraphAuthError,
    GraphRateLimited,
    InstagramError,
    PermanentError,
    TransientError,
)
from ig_refresh_dagster.instagram.models import InstagramProfile, RecentMedia
from ig_refresh_dagster.instagram.usage import ApiUsage, parse_usage
from ig_refresh_dagster.instagram.usernames import validate_username

PROFILE_FIELDS = (
    "id,ig_id,username,name,biography,profile_picture_url,followers_count,follows_count,"
    "media_count,website"
)
MEDIA_FIELDS = (
    "id,caption,like_count,comments_count,media_type,media_product_type,permalink,timestamp"
)
# When throttled without an estimate: Platform limits are counted over a rolling hour, so
# after a full hour the calls that caused the throttle have left the window.
DEFAULT_RATE_LIMIT_WAIT_SECONDS = 3600.0

RATE_LIMIT_CODES = frozenset({4, 17, 32, 341, 368, 613, *range(80000, 80015)})
AUTH_CODES = frozenset({10, 102, 190, *range(200, 300)})
ACCOUNT_UNAVAILABLE_CODES = frozenset({110})
ACCOUNT_UNAVAILABLE_SUBCODES = frozenset({2207013})
TRANSIENT_CODES = frozenset({1, 2})
# Meta access tokens start with "EAA" followed by a long base62 run.
_TOKEN_SHAPED = re.compile(r"EAA[A-Za-z0-9]{16,}")


class GraphResult(BaseModel):
    profile: InstagramProfile
    usage: ApiUsage | None = None


def token_fingerprint(token: str) -> str:
    """A stable, non-reversible id for a token (safe to store and log)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def business_discovery_fields(username: str, media_limit: int) -> str:
    return (
        f"business_discovery.username({username}){{{PROFILE_FIELDS},"
        f"media.limit({media_limit}){{{MEDIA_FIELDS}}}}}"
    )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _timestamp(value: Any) -> datetime | None:
    """Graph writes ``2024-05-01T10:00:00+0000``; fromisoformat reads that since 3.11."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class GraphClient:
    """Reads public profile fields of business/creator accounts through our own IG account."""

    def __init__(
        self,
        base_url: str,
        business_account_id: str,
        access_token: str,
        media_limit: int = 12,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        if not access_token:
            raise ValueError("an access token is required for the Graph API")
        self._url = f"{base_url.rstrip('/')}/{business_account_id}"
        self._token = access_token
        self.media_limit = media_limit
        self.timeout = timeout
        self._session = session or requests.Session()
        self.token_fingerprint = token_fingerprint(access_token)

    def fetch(self, username: str) -> GraphResult:
        name = validate_username(username)
        response = self._get(name)
        if isinstance(response, InstagramError):
            raise response
        usage = parse_usage(response.headers)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransientError(
                f"Graph answered HTTP {response.status_code} for @{name} with a body that is not "
                "a JSON object",
                reason="graph_unreadable",
                usage=usage,
            )
        if "error" in body or response.status_code >= 400:
            raise self._error(name, response.status_code, body.get("error"), usage)
        return GraphResult(profile=self._profile(name, body, usage), usage=usage)

    def _get(self, name: str) -> requests.Response | InstagramError:
        """The raw response, or the error to raise: built outside the ``except`` block so no
        requests exception (and whatever it quotes) is chained onto ours."""
        try:
            response = self._session.get(
                self._url,
                params={"fields": business_discovery_fields(name, self.media_limit)},
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            return TransientError(
                f"Graph request for @{name} timed out after {self.timeout}s",
                reason="graph_timeout",
            )
        except requests.RequestException as exc:
            kind = type(exc).__name__
            return TransientError(
                f"Graph request for @{name} failed: {kind}: {self._scrub(str(exc))}",
                reason="graph_network",
            )
        return response

    def _scrub(self, text: str) -> str:
        """Remove our token, and anything shaped like a Meta token (Graph may quote a cut-off
        or different one back)."""
        return _TOKEN_SHAPED.sub("[token]", text.replace(self._token, "[token]"))

    def _error(self, name: str, status: int, error: Any, usage: ApiUsage | None) -> InstagramError:
        error = error if isinstance(error, dict) else {}
        code = _as_int(error.get("code"))
        subcode = _as_int(error.get("error_subcode"))
        message = self._scrub(str(error.get("message") or "no message"))[:300]
        trace = self._scrub(str(error.get("fbtrace_id") or "-"))[:40]
        what = (
            f"Graph error for @{name}: HTTP {status}, code {code}"
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

    def _profile(self, name: str, body: dict[str, Any], usage: ApiUsage | None) -> InstagramProfile:
        data = body.get("business_discovery")
        if not isinstance(data, dict):
            raise PermanentError(
                f"Graph answered for @{name} without a business_discovery object",
                reason="graph_unexpected_body",
                usage=usage,
            )
        media_block = data.get("media")
        media_items = media_block.get("data") if isinstance(media_block, dict) else None
        try:
            media = [
                RecentMedia(
                    id=str(item["id"]),
                    caption=item.get("caption"),
                    like_count=_as_int(item.get("like_count")),
                    comments_count=_as_int(item.get("comments_count")),
                    media_type=item.get("media_type"),
                    media_product_type=item.get("media_product_type"),
                    permalink=item.get("permalink"),
                    timestamp=_timestamp(item.get("timestamp")),
                )
                for item in (media_items or [])
                if isinstance(item, dict) and item.get("id") is not None
            ]
            return InstagramProfile(
                username=name,
                id=str(data["id"]) if data.get("id") is not None else None,
                ig_id=_as_int(data.get("ig_id")),
                name=data.get("name"),
                biography=data.get("biography"),
                profile_picture_url=data.get("profile_picture_url"),
                followers_count=_as_int(data.get("followers_count")),
                follows_count=_as_int(data.get("follows_count")),
                media_count=_as_int(data.get("media_count")),
                website=data.get("website"),
                # Business Discovery only ever answers for business and creator accounts.
                is_business_account=True,
                source="graph",
                method="business_discovery",
                fetched_at=datetime.now(UTC),
                recent_media=media,
            )
        except ValidationError as exc:
            raise PermanentError(
                f"Graph answered for @{name} with fields of the wrong type "
                f"({exc.error_count()} problems)",
                reason="graph_unexpected_body",
                usage=usage,
            ) from None
