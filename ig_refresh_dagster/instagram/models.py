"""What one fetch learned about a profile, and how it maps onto the app's ``Account`` document.

``None`` always means "unknown" and is never written: a scrape that could not read the
following count must not erase the one Graph gave us last week, and a profile without a known
display name leaves the account's ``name`` as it is. URLs that Instagram (or someone answering
in its place) sends are kept only when they are plain http(s) links of a sane length; anything
else (``javascript:``, ``data:``, relative, overlong) is unknown. Counts are non-negative ints up
to ``MAX_COUNT`` (strict: no bools, floats or strings), so a value no parser vetted cannot reach
the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, computed_field, field_validator

from ig_refresh_dagster.instagram.counts import MAX_COUNT

# Instagram's signed CDN links run to several hundred characters; browsers and most stores
# handle 2,048 safely.
MAX_URL_LENGTH = 2048
_WEB_SCHEMES = frozenset({"http", "https"})
CountField = Annotated[int, Field(strict=True, ge=0, le=MAX_COUNT)]
# Instagram's numeric ids as decimal strings (a pk, a Graph IG User id).
NumericId = Annotated[str, Field(pattern=r"^[0-9]{1,30}$")]
# The counts a profile carries, by field, and their names in ``instagramData``.
COUNT_FIELDS = {
    "followers_count": "followers",
    "follows_count": "following",
    "media_count": "mediaCount",
}


def web_url(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL with a host, at most MAX_URL_LENGTH
    characters and without whitespace or control characters; otherwise None (unknown)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_URL_LENGTH:
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in _WEB_SCHEMES or not host:
        return None
    return text


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class RecentMedia(BaseModel):
    id: str
    caption: str | None = None
    like_count: CountField | None = None
    comments_count: CountField | None = None
    media_type: str | None = None
    media_product_type: str | None = None
    permalink: str | None = None
    timestamp: datetime | None = None

    @field_validator("permalink", mode="before")
    @classmethod
    def _permalink_web_url(cls, value: Any) -> str | None:
        return web_url(value)

    @field_validator("timestamp")
    @classmethod
    def _timestamp_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    def to_document(self) -> dict[str, Any]:
        fields = {
            "id": self.id,
            "caption": self.caption,
            "likeCount": self.like_count,
            "commentsCount": self.comments_count,
            "mediaType": self.media_type,
            "mediaProductType": self.media_product_type,
            "permalink": self.permalink,
            "timestamp": self.timestamp,
        }
        return {k: v for k, v in fields.items() if v is not None}


class InstagramProfile(BaseModel):
    """``id`` is Graph's IG User id for ``source="graph"`` and Instagram's user id (pk) for the
    JSON endpoint; ``ig_id`` is Graph's (deprecated) pk. ``count_steps`` holds, for each count
    that was shown rounded ("12.5K"), the unit of its last digit; a count not in it is exact."""

    username: str
    id: NumericId | None = None
    ig_id: Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)] | None = None
    name: str | None = None
    biography: str | None = None
    profile_picture_url: str | None = None
    followers_count: CountField | None = None
    follows_count: CountField | None = None
    media_count: CountField | None = None
    count_steps: dict[Literal["followers_count", "follows_count", "media_count"], int] = {}
    website: str | None = None
    is_verified: bool | None = None
    is_business_account: bool | None = None
    source: Literal["graph", "scrape"]
    method: Literal["business_discovery", "web_profile_json", "profile_html"]
    fetched_at: datetime
    recent_media: list[RecentMedia] = []

    @field_validator("profile_picture_url", "website", mode="before")
    @classmethod
    def _web_urls(cls, value: Any) -> str | None:
        return web_url(value)

    @field_validator("fetched_at")
    @classmethod
    def _fetched_at_utc(cls, value: datetime) -> datetime:
        return _utc(value)  # type: ignore[return-value]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def engagement_rate(self) -> float | None:
        """Mean (likes + comments) per recent post over followers; None when not computable."""
        if not self.followers_count or self.followers_count <= 0:
            return None
        totals = [
            m.like_count + m.comments_count
            for m in self.recent_media
            if m.like_count is not None and m.comments_count is not None
        ]
        if not totals:
            return None
        return sum(totals) / len(totals) / self.followers_count

    def user_ids(self) -> dict[str, str]:
        """The ids this answer proves, by ``instagramData`` field: ``igUserId`` is Instagram's
        user id (the JSON endpoint's ``user.id``, Graph's ``ig_id``), ``igGraphId`` Graph's IG
        User id. They number users differently, so each is only ever compared with itself."""
        if self.source == "graph":
            ids = {
                "igGraphId": self.id,
                "igUserId": None if self.ig_id is None else str(self.ig_id),
            }
        else:
            ids = {"igUserId": self.id}
        return {k: v for k, v in ids.items() if v is not None}

    def rounded_counts(self) -> dict[str, tuple[int, int]]:
        """``instagramData`` count -> (shown value, step) for each count shown rounded."""
        return {
            COUNT_FIELDS[field]: (value, step)
            for field, step in self.count_steps.items()
            if (value := getattr(self, field)) is not None and step > 1
        }

    def to_account_fields(self) -> dict[str, Any]:
        """Fields to ``$set`` on the ``Account`` document; unknown values are left out (the
        username is never a stand-in for an unknown display name)."""
        data = {
            "name": self.name,
            "username": self.username,
            "description": self.biography,
            "followers": self.followers_count,
            "following": self.follows_count,
            "mediaCount": self.media_count,
            "profileImage": self.profile_picture_url,
            "externalUrl": self.website,
            "isBusinessAccount": self.is_business_account,
            "isVerified": self.is_verified,
            "engagementRate": self.engagement_rate,
            "recentMedia": [m.to_document() for m in self.recent_media] or None,
            "source": self.source,
            "method": self.method,
            "fetchedAt": self.fetched_at,
            **self.user_ids(),
            "countsExact": {
                name: self.count_steps.get(field, 1) <= 1  # type: ignore[call-overload]
                for field, name in COUNT_FIELDS.items()
                if getattr(self, field) is not None
            }
            or None,
        }
        fields = {
            "name": self.name,
            "description": self.biography,
            "followerCount": self.followers_count,
            "imageUrl": self.profile_picture_url,
            "instagramData": {k: v for k, v in data.items() if v is not None},
        }
        return {k: v for k, v in fields.items() if v is not None}
