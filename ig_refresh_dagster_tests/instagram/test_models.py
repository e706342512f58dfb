from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ig_refresh_dagster.instagram import InstagramProfile, RecentMedia
from ig_refresh_dagster.instagram.models import MAX_URL_LENGTH

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _profile(**kw: object) -> InstagramProfile:
    base: dict[str, object] = {
        "username": "acme.studio",
        "source": "graph",
        "method": "business_discovery",
        "fetched_at": NOW,
    }
    base.update(kw)
    return InstagramProfile(**base)  # type: ignore[arg-type]


def test_engagement_rate_mean_over_media_with_both_counts() -> None:
    media = [
        RecentMedia(id="1", like_count=90, comments_count=10),
        RecentMedia(id="2", like_count=40, comments_count=10),
        RecentMedia(id="3", like_count=None, comments_count=5),
        RecentMedia(id="4", like_count=500, comments_count=None),
    ]
    assert _profile(followers_count=1000, recent_media=media).engagement_rate == 0.075


def test_engagement_rate_unknown_cases() -> None:
    media = [RecentMedia(id="1", like_count=9, comments_count=1)]
    assert _profile(followers_count=None, recent_media=media).engagement_rate is None
    assert _profile(followers_count=0, recent_media=media).engagement_rate is None
    assert _profile(followers_count=100).engagement_rate is None
    only_partial = [RecentMedia(id="1", like_count=None, comments_count=3)]
    assert _profile(followers_count=100, recent_media=only_partial).engagement_rate is None
    zero = [RecentMedia(id="1", like_count=0, comments_count=0)]
    assert _profile(followers_count=100, recent_media=zero).engagement_rate == 0.0


def test_fetched_at_is_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    profile = _profile(fetched_at=datetime(2026, 11, 28, 14, 0, tzinfo=plus_two))
    assert profile.fetched_at == NOW and profile.fetched_at.utcoffset() == timedelta(0)
    naive = _profile(fetched_at=datetime(2026, 11, 28, 12, 0))
    assert naive.fetched_at == NOW


def test_account_fields_full() -> None:
    profile = _profile(
        name="Acme Studio",
        biography="Posters",
        profile_picture_url="https://img/acme.jpg",
        followers_count=1000,
        follows_count=10,
        media_count=5,
        website="https://acme.example",
        is_verified=False,
        is_business_account=True,
        recent_media=[
            RecentMedia(id="1", like_count=40, comments_count=10, timestamp=NOW, caption="c")
        ],
    )
    fields = profile.to_account_fields()
    assert fields["name"] == "Acme Studio"
    assert fields["description"] == "Posters"
    assert fields["followerCount"] == 1000
    assert fields["imageUrl"] == "https://img/acme.jpg"
    data = fields["instagramData"]
    assert data == {
        "name": "Acme Studio",
        "username": "acme.studio",
        "description": "Posters",
        "followers": 1000,
        "following": 10,
        "mediaCount": 5,
        "profileImage": "https://img/acme.jpg",
        "externalUrl": "https://acme.example",
        "isBusinessAccount": True,
        "isVerified": False,
        "engagementRate": 0.05,
        "recentMedia": [
            {"id": "1", "caption": "c", "likeCount": 40, "commentsCount": 10, "timestamp": NOW}
        ],
        "source": "graph",
        "method": "business_discovery",
        "fetchedAt": NOW,
        "countsExact": {"followers": True, "following": True, "mediaCount": True},
    }


@pytest.mark.parametrize("bad", [-5, 2**70, "²", "12", True, 12.0])
def test_counts_outside_the_contract_are_refused(bad: object) -> None:
    """The model is the last gate before the store: no parser may hand it a value that is not
    a plain non-negative int of a sane size."""
    with pytest.raises(ValueError):
        _profile(followers_count=bad)
    with pytest.raises(ValueError):
        RecentMedia(id="1", like_count=bad)


def test_ids_and_precision_map_onto_their_own_fields() -> None:
    graph = _profile(id="17841400000000099", ig_id=12345, followers_count=10)
    assert graph.user_ids() == {"igGraphId": "17841400000000099", "igUserId": "12345"}
    page = _profile(
        source="scrape",
        method="profile_html",
        followers_count=12_500,
        media_count=40,
        count_steps={"followers_count": 100},
    )
    assert page.user_ids() == {}
    assert page.rounded_counts() == {"followers": (12_500, 100)}
    assert page.to_account_fields()["instagramData"]["countsExact"] == {
        "followers": False,
        "mediaCount": True,
    }
    with pytest.raises(ValueError):
        _profile(id="12a")


def test_account_fields_omit_unknowns_and_never_use_the_username_as_name() -> None:
    """An unknown display name is unknown: the username is not written in its place."""
    fields = _profile(source="scrape", method="profile_html").to_account_fields()
    assert fields == {
        "instagramData": {
            "username": "acme.studio",
            "source": "scrape",
            "method": "profile_html",
            "fetchedAt": NOW,
        },
    }
    assert "followerCount" not in fields


def test_zero_is_kept_when_known() -> None:
    fields = _profile(followers_count=0, media_count=0).to_account_fields()
    assert fields["followerCount"] == 0
    assert fields["instagramData"]["mediaCount"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://scontent.example/p.jpg",
        "http://acme.example",
        "HTTPS://Acme.Example/path?q=1#frag",
        "https://bücher.example/",
        "https://" + "a" * (MAX_URL_LENGTH - len("https://")),
    ],
)
def test_web_urls_are_kept(url: str) -> None:
    profile = _profile(profile_picture_url=url, website=url)
    assert (profile.profile_picture_url, profile.website) == (url, url)
    assert RecentMedia(id="1", permalink=url).permalink == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "ftp://acme.example/",
        "//acme.example/p.jpg",
        "/p.jpg",
        "acme.example",
        "https://",
        "https:///p.jpg",
        "https://acme.example/a b",
        "https://acme.example/\x00",
        "https://acme.example/\u202e",
        "https://[::1",
        "https://" + "a" * MAX_URL_LENGTH,
        "",
        42,
        ["https://acme.example"],
    ],
)
def test_other_urls_are_unknown_and_never_written(url: object) -> None:
    profile = _profile(profile_picture_url=url, website=url)
    assert profile.profile_picture_url is None and profile.website is None
    assert RecentMedia(id="1", permalink=url).permalink is None
    fields = _profile(
        profile_picture_url=url,
        website=url,
        recent_media=[RecentMedia(id="1", permalink=url, like_count=1)],
    ).to_account_fields()
    assert "imageUrl" not in fields
    data = fields["instagramData"]
    assert "profileImage" not in data and "externalUrl" not in data
    assert data["recentMedia"] == [{"id": "1", "likeCount": 1}]
