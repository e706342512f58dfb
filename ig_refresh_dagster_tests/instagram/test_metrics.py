"""The insights metric sets: per Graph version, and per media type and product type."""

from __future__ import annotations

import pytest

from ig_refresh_dagster import settings
from ig_refresh_dagster.instagram.metrics import (
    DEFAULT_GRAPH_MAJOR,
    account_series_metrics,
    account_total_metrics,
    graph_major,
    media_metrics,
)

# Retired for every version; asking for them fails the whole request.
GONE = {
    "impressions",
    "plays",
    "video_views",
    "clips_replays_count",
    "ig_reels_aggregated_all_plays_count",
    "profile_views",
    "website_clicks",
    "engagement",
}


def test_default_graph_version_is_current() -> None:
    """v21.0 stops answering on 2027-01-21; v25.0 is available until 2028-07-29."""
    default_url = settings.default("INSTAGRAM_GRAPH_API_URL")
    assert isinstance(default_url, str)
    assert default_url.startswith("https://graph.facebook.com/v")
    assert graph_major(default_url) >= 25
    assert graph_major(default_url) == DEFAULT_GRAPH_MAJOR


@pytest.mark.parametrize(
    ("url", "major"),
    [
        ("https://graph.facebook.com/v25.0", 25),
        ("https://graph.facebook.com/v27.0/", 27),
        ("http://127.0.0.1:8080/v21.0", 21),
        ("https://graph.facebook.com", DEFAULT_GRAPH_MAJOR),
        ("https://graph.facebook.com/v25.0/extra", DEFAULT_GRAPH_MAJOR),
    ],
)
def test_graph_major_from_the_base_url(url: str, major: int) -> None:
    assert graph_major(url) == major


def test_account_metrics_of_the_default_version() -> None:
    assert account_series_metrics(25) == ("reach", "follower_count")
    assert account_total_metrics(25) == (
        "accounts_engaged",
        "total_interactions",
        "likes",
        "comments",
        "shares",
        "saves",
        "profile_links_taps",
        "views",
    )


def test_views_only_from_v22() -> None:
    assert "views" not in account_total_metrics(21)
    assert "views" not in media_metrics(21, "VIDEO", "REELS")
    assert "views" in account_total_metrics(22)
    assert "views" in media_metrics(22, "VIDEO", "REELS")


@pytest.mark.parametrize(
    ("media_type", "product", "expected"),
    [
        (
            "IMAGE",
            "FEED",
            (
                "reach",
                "likes",
                "comments",
                "saved",
                "shares",
                "total_interactions",
                "views",
                "follows",
                "profile_visits",
            ),
        ),
        (
            "VIDEO",
            "REELS",
            (
                "reach",
                "likes",
                "comments",
                "saved",
                "shares",
                "total_interactions",
                "views",
                "ig_reels_avg_watch_time",
                "ig_reels_video_view_total_time",
            ),
        ),
        (
            "VIDEO",
            "STORY",
            (
                "reach",
                "shares",
                "total_interactions",
                "views",
                "follows",
                "profile_visits",
                "replies",
                "navigation",
            ),
        ),
        # Graph has refused `views` for albums.
        (
            "CAROUSEL_ALBUM",
            "FEED",
            (
                "reach",
                "likes",
                "comments",
                "saved",
                "shares",
                "total_interactions",
                "follows",
                "profile_visits",
            ),
        ),
        # Unknown product type: only what every product type offers.
        ("IMAGE", None, ("reach", "shares", "total_interactions", "views")),
        ("VIDEO", "AD", ("reach", "shares", "total_interactions", "views")),
        (None, None, ("reach", "shares", "total_interactions")),
    ],
)
def test_media_metrics_follow_the_product_type(
    media_type: str | None, product: str | None, expected: tuple[str, ...]
) -> None:
    assert media_metrics(25, media_type, product) == expected


@pytest.mark.parametrize("major", [21, 22, 25, 27])
def test_no_retired_metric_is_ever_asked(major: int) -> None:
    asked = {*account_series_metrics(major), *account_total_metrics(major)}
    for media_type in ("IMAGE", "VIDEO", "CAROUSEL_ALBUM", None):
        for product in ("FEED", "REELS", "STORY", None):
            asked.update(media_metrics(major, media_type, product))
    assert not asked & GONE
