"""Which insights metrics to ask Graph for: per Graph version, and for media per media product
type, so no request carries a metric Graph is known to refuse.

Graph answers a whole insights request with error 100 when one metric is not offered, so a
metric asked of the wrong media costs a second, budgeted call (``insights`` then drops it and
asks again). From Meta's Instagram Platform references and changelogs, checked 2026-11:

- Versions: v25.0 (2026-02-18, available until 2028-07-29), v26.0 (2026-07-29), v27.0
  (2026-11-04). v21.0 ends on 2027-01-21, v22.0 on 2027-05-20.
- ``views`` was introduced in v22.0 for media (FEED, REELS, STORY) and accounts
  (``metric_type=total_value``), replacing ``impressions``, ``plays``, ``clips_replays_count``
  and ``ig_reels_aggregated_all_plays_count``, which every version refuses since 2025-04-21.
  Graph has been seen refusing ``views`` for carousel albums ("(#100) The Media Insights API
  does not support the views metric for this media product type"), so albums are not asked.
- Media: ``reach``, ``shares``, ``total_interactions`` for every product type; ``likes``,
  ``comments``, ``saved`` for FEED and REELS; ``follows``, ``profile_visits`` for FEED and
  STORY; ``ig_reels_avg_watch_time``, ``ig_reels_video_view_total_time`` (milliseconds) for
  REELS; ``replies``, ``navigation`` for STORY. Media inside an album have no insights.
- Account, ``period=day`` series: ``reach``, ``follower_count`` (100+ followers only). As
  totals: ``accounts_engaged``, ``total_interactions``, ``likes``, ``comments``, ``shares``,
  ``saves``, ``profile_links_taps``, ``views``. ``profile_views``, ``website_clicks`` and the
  other contact-click series went on 2025-01-08 for every version.

A media whose product type is unknown (scraped media, a type Meta adds later) is asked only
what every product type offers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FEED, REELS, STORY = "FEED", "REELS", "STORY"
PRODUCT_TYPES = frozenset({FEED, REELS, STORY})
CAROUSEL_ALBUM = "CAROUSEL_ALBUM"
# The version assumed for a Graph URL that names none (Graph then uses the app's default).
DEFAULT_GRAPH_MAJOR = 25
_VERSION = re.compile(r"/v(\d{1,3})\.\d{1,3}/?$")


@dataclass(frozen=True)
class Metric:
    """One metric: the product types it is offered for (media metrics only), the first Graph
    major version offering it, and whether carousel albums have it."""

    name: str
    products: frozenset[str] = PRODUCT_TYPES
    since: int = 0
    albums: bool = True

    def offered(self, major: int) -> bool:
        return major >= self.since


ACCOUNT_SERIES = (Metric("reach"), Metric("follower_count"))
ACCOUNT_TOTALS = (
    Metric("accounts_engaged"),
    Metric("total_interactions"),
    Metric("likes"),
    Metric("comments"),
    Metric("shares"),
    Metric("saves"),
    Metric("profile_links_taps"),
    Metric("views", since=22),
)
MEDIA = (
    Metric("reach"),
    Metric("likes", frozenset({FEED, REELS})),
    Metric("comments", frozenset({FEED, REELS})),
    Metric("saved", frozenset({FEED, REELS})),
    Metric("shares"),
    Metric("total_interactions"),
    Metric("views", since=22, albums=False),
    Metric("follows", frozenset({FEED, STORY})),
    Metric("profile_visits", frozenset({FEED, STORY})),
    Metric("ig_reels_avg_watch_time", frozenset({REELS})),
    Metric("ig_reels_video_view_total_time", frozenset({REELS})),
    Metric("replies", frozenset({STORY})),
    Metric("navigation", frozenset({STORY})),
)


def graph_major(base_url: str) -> int:
    """The Graph major version a base URL such as ``https://graph.facebook.com/v25.0`` names;
    DEFAULT_GRAPH_MAJOR when it names none."""
    found = _VERSION.search(base_url)
    return int(found.group(1)) if found else DEFAULT_GRAPH_MAJOR


def account_series_metrics(major: int) -> tuple[str, ...]:
    return tuple(m.name for m in ACCOUNT_SERIES if m.offered(major))


def account_total_metrics(major: int) -> tuple[str, ...]:
    return tuple(m.name for m in ACCOUNT_TOTALS if m.offered(major))


def media_metrics(major: int, media_type: str | None, product_type: str | None) -> tuple[str, ...]:
    """The lifetime metrics to ask of one media. Unknown product type: only what every product
    type offers; unknown media type: only what albums offer too."""
    album = media_type is None or media_type.upper() == CAROUSEL_ALBUM
    product = (product_type or "").upper()
    return tuple(
        m.name
        for m in MEDIA
        if m.offered(major)
        and (m.albums or not album)
        and (product in m.products if product in PRODUCT_TYPES else m.products == PRODUCT_TYPES)
    )
