"""Instagram Graph API Business Discovery: one GET per profile, errors mapped to the taxonomy.

The request itself, token handling (header only, every error string scrubbed) and the mapping
of Graph error codes onto the taxonomy live in ``transport``, shared with the insights client.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from ig_refresh_dagster.instagram.counts import MalformedCount, strict_count
from ig_refresh_dagster.instagram.errors import MalformedAnswer
from ig_refresh_dagster.instagram.models import InstagramProfile, RecentMedia
from ig_refresh_dagster.instagram.transport import GraphTransport, as_int
from ig_refresh_dagster.instagram.usage import ApiUsage
from ig_refresh_dagster.instagram.usernames import require_same_account, validate_username

PROFILE_FIELDS = (
    "id,ig_id,username,name,biography,profile_picture_url,followers_count,follows_count,"
    "media_count,website"
)
MEDIA_FIELDS = (
    "id,caption,like_count,comments_count,media_type,media_product_type,permalink,timestamp"
)


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
    ) -> None:
        if not access_token:
            raise ValueError("an access token is required for the Graph API")
        self._transport = GraphTransport(base_url, timeout=timeout)
        self._business_account_id = business_account_id
        self._token = access_token
        self.media_limit = media_limit
        self.token_fingerprint = token_fingerprint(access_token)

    def fetch(self, username: str) -> GraphResult:
        name = validate_username(username)
        subject = f"@{name}"
        answer = self._transport.get(
            self._business_account_id,
            {"fields": business_discovery_fields(name, self.media_limit)},
            self._token,
            subject,
        )
        answer.raise_for_error(self._token)
        return GraphResult(
            profile=self._profile(name, answer.body, answer.usage), usage=answer.usage
        )

    def _profile(self, name: str, body: dict[str, Any], usage: ApiUsage | None) -> InstagramProfile:
        data = body.get("business_discovery")
        if not isinstance(data, dict):
            raise MalformedAnswer(
                f"Graph answered for @{name} without a business_discovery object",
                reason="graph_unexpected_body",
                usage=usage,
            )
        require_same_account(name, data.get("username"), "Graph", "graph_profile_mismatch", usage)
        media_block = data.get("media")
        media_items = media_block.get("data") if isinstance(media_block, dict) else None
        try:
            media = [
                RecentMedia(
                    id=str(item["id"]),
                    caption=item.get("caption"),
                    like_count=strict_count(item.get("like_count")),
                    comments_count=strict_count(item.get("comments_count")),
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
                ig_id=as_int(data.get("ig_id")),
                name=data.get("name"),
                biography=data.get("biography"),
                profile_picture_url=data.get("profile_picture_url"),
                followers_count=strict_count(data.get("followers_count")),
                follows_count=strict_count(data.get("follows_count")),
                media_count=strict_count(data.get("media_count")),
                website=data.get("website"),
                # Business Discovery only ever answers for business and creator accounts.
                is_business_account=True,
                source="graph",
                method="business_discovery",
                fetched_at=datetime.now(UTC),
                recent_media=media,
            )
        except MalformedCount as exc:
            raise MalformedAnswer(
                f"Graph answered for @{name} with a count that is not one ({exc})",
                reason="graph_malformed_count",
                usage=usage,
            ) from None
        except ValidationError as exc:
            raise MalformedAnswer(
                f"Graph answered for @{name} with fields of the wrong type "
                f"({exc.error_count()} problems)",
                reason="graph_unexpected_body",
                usage=usage,
            ) from None
