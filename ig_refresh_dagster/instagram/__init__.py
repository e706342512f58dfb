"""Instagram fetch layer: Graph Business Discovery, anonymous scraping, and the fetcher that
chooses between them within budgets. Plain Python; the Dagster layer calls into it."""

from ig_refresh_dagster.instagram.counts import (
    ProfileCounts,
    parse_count,
    parse_profile_description,
)
from ig_refresh_dagster.instagram.errors import (
    AccountGone,
    BudgetExhausted,
    BudgetUnavailable,
    GraphAccountUnavailable,
    GraphAuthError,
    GraphRateLimited,
    InstagramError,
    InvalidUsername,
    PermanentError,
    ProfileMismatch,
    ResponseTooLarge,
    ScrapeBlocked,
    TransientError,
)
from ig_refresh_dagster.instagram.fetcher import Budget, FetchOutcome, ProfileFetcher
from ig_refresh_dagster.instagram.graph import GraphClient, GraphResult, token_fingerprint
from ig_refresh_dagster.instagram.models import InstagramProfile, RecentMedia
from ig_refresh_dagster.instagram.scrape import ProfileScraper
from ig_refresh_dagster.instagram.usage import ApiUsage, parse_usage
from ig_refresh_dagster.instagram.usernames import validate_username

__all__ = [
    "AccountGone",
    "ApiUsage",
    "Budget",
    "BudgetExhausted",
    "BudgetUnavailable",
    "FetchOutcome",
    "GraphAccountUnavailable",
    "GraphAuthError",
    "GraphClient",
    "GraphRateLimited",
    "GraphResult",
    "InstagramError",
    "InstagramProfile",
    "InvalidUsername",
    "PermanentError",
    "ProfileCounts",
    "ProfileFetcher",
    "ProfileMismatch",
    "ProfileScraper",
    "RecentMedia",
    "ResponseTooLarge",
    "ScrapeBlocked",
    "TransientError",
    "parse_count",
    "parse_profile_description",
    "parse_usage",
    "token_fingerprint",
    "validate_username",
]
