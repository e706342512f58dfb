"""What one fetch learned about a profile, and how it maps onto the app's ``Account`` document.

``None`` always means "unknown" and is never written: a scrape that could not read the
following count must not erase the one Graph gave us last week, and a profile without a known
display name leaves the account's ``name`` as it is. URLs that Instagram (or someone answering
in its place) sends are kept only when they are plain http(s) links of a sane length; anything
else (``javascript:``, ``data:``, relative, overlong) is unknown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, computed_field, field_validator

# Instagram's signed CDN links run to several hundred characters; browsers and most stores
# handle 2,048 safely.
MAX_URL_LENGTH = 2048
_WEB_SCHEMES = frozenset({"http", "https"})


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
    like_count: int | None = None
    comments_count: int | None = None
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
    username: str
    id: str | None = None
    ig_id: int | None = None
    name: str | None = None
    biography: str | None = None
    profile_picture_url: str | None = None
    followers_count: int | None = None
    follows_count: int | None = None
    media_count: int | None = None
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
        }
        fields = {
            "name": self.name,
            "description": self.biography,
            "followerCount": self.followers_count,
            "imageUrl": self.profile_picture_url,
            "instagramData": {k: v for k, v in data.items() if v is not None},
        }
        return {k: v for k, v in fields.items() if v is not None}
