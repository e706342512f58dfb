"""Anonymous reads of public profiles, for accounts Graph cannot see.

Stage 1 asks the JSON endpoint the web app itself uses (``/api/v1/users/web_profile_info/``
with the web app's ``x-ig-app-id``), which has exact counts and recent posts. Instagram often
refuses it to clients it does not recognise (401/403, a login redirect, an HTML body, or a 400
for some business accounts), so stage 2 reads the public profile page's Open Graph tags, whose
counts are rounded and localised. Redirects are never followed to the login, challenge or
consent pages: landing there means we are blocked, and saying so is the useful answer. Nor are
they followed off Instagram's own hosts or down from https to http (see ``RedirectPolicy``).

Every answer must prove it is about the account asked for, or it is a ProfileMismatch and
nothing of it is returned: the JSON body's ``user.username`` must be the handle; the page must
show ``(@handle)`` in its og:title or og:description, or have an ``og:url`` or canonical link
to ``/handle/``, and none of these may name another account. A page without any count (a login,
consent or rate page served with status 200) is classified as the block it is, never a profile.
Counts and ids that are not plain non-negative numbers make the JSON answer unusable (the page
is asked instead). Each stage has ``timeout`` seconds in total (redirect hops included) and
reads at most ``SCRAPE_MAX_BYTES``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree
from pydantic import ValidationError

from ig_refresh_dagster.instagram.bounded_http import (
    Answer,
    Deadline,
    Label,
    bounded_get,
    host_of,
    new_session,
)
from ig_refresh_dagster.instagram.counts import (
    Count,
    MalformedCount,
    read_profile_counts,
    strict_count,
)
from ig_refresh_dagster.instagram.errors import (
    AccountGone,
    BudgetExhausted,
    InstagramError,
    ProfileMismatch,
    ScrapeBlocked,
    TransientError,
)
from ig_refresh_dagster.instagram.models import InstagramProfile, RecentMedia
from ig_refresh_dagster.instagram.retry_after import retry_after_seconds
from ig_refresh_dagster.instagram.usernames import require_same_account, validate_username

IG_APP_ID = "936619743392459"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
# Without a Retry-After: rate blocks ("Please wait a few minutes", 429) lift in minutes; a login
# wall, challenge or consent page means this client is not trusted, which lasts longer.
RATE_BLOCK_WAIT_SECONDS = 900.0
WALL_WAIT_SECONDS = 3600.0
MAX_REDIRECTS = 3
# Real profile pages are a few hundred kilobytes, the JSON profile less.
SCRAPE_MAX_BYTES = 5 * 1024 * 1024
INSTAGRAM_DOMAIN = "instagram.com"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WALL_PATHS = ("/accounts/login", "/challenge", "/consent", "/accounts/suspended")
_PLEASE_WAIT = "please wait a few minutes"
_RATE_TEXTS = ("try again later", "rate limit")
_CONSENT_TEXTS = ("allow the use of cookies", "accept cookies", "allow all cookies")
# How og:title and og:description show the profile's owner: "Name (@handle)", or a title
# that starts with "@handle" for an account without a display name.
_HANDLE = re.compile(r"\(@([a-z0-9._]{1,30})\)|^@([a-z0-9._]{1,30})(?![a-z0-9._])", re.IGNORECASE)
_PAGE_COUNTS = (
    ("followers", "followers_count"),
    ("following", "follows_count"),
    ("posts", "media_count"),
)
_MEDIA_TYPES = {"GraphImage": "IMAGE", "GraphVideo": "VIDEO", "GraphSidecar": "CAROUSEL_ALBUM"}
_PRODUCT_TYPES = {"feed": "FEED", "clips": "REELS"}


class _Inconclusive(Exception):
    """Stage 1 could not answer; stage 2 may."""


def _dig(node: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and len(node) > key else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
    return node


def _count(node: Any, *path: str) -> int | None:
    """None when absent; MalformedCount when present but not a count."""
    return strict_count(_dig(node, *path))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _retry_after(answer: Answer, default: float) -> float:
    return retry_after_seconds(answer.headers.get("Retry-After"), default)


def _path(url: str) -> str:
    try:
        return urlsplit(url).path
    except ValueError:
        return ""


def _is_wall(url: str) -> bool:
    path = _path(url).lower()
    return any(path.startswith(p) for p in _WALL_PATHS)


def _names_other_account(url: str, username: str) -> bool:
    """Whether a page's own URL (``og:url``, canonical link) is not ``/{username}/``."""
    first = _path(url).strip("/").split("/")[0]
    return first.lower() != username


class RedirectPolicy:
    """Which redirect targets the scraper follows: the configured web host on its scheme and
    port, and, when that host is Instagram's, any ``instagram.com`` host over the same scheme.
    A target with user info, another scheme (no https -> http downgrade), port or host is
    not followed."""

    def __init__(self, web_url: str) -> None:
        parts = urlsplit(web_url)
        self.scheme = parts.scheme.lower()
        self.host = (parts.hostname or "").lower()
        self.port = parts.port or _DEFAULT_PORTS.get(self.scheme)
        self.instagram = _is_instagram(self.host)

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        if parts.scheme.lower() != self.scheme or parts.username or parts.password:
            return False
        if (host, port) == (self.host, self.port):
            return True
        return self.instagram and _is_instagram(host) and port == self.port


def _is_instagram(host: str) -> bool:
    return host == INSTAGRAM_DOMAIN or host.endswith(f".{INSTAGRAM_DOMAIN}")


# Charges one request to the scrape budget: 0.0 when admitted, else seconds until capacity.
Charge = Callable[[], float]


class _Meter:
    """The requests of one fetch: the first was paid for by the caller, each later one is
    charged before it is sent, so the budget counts what Instagram sees."""

    def __init__(self, charge: Charge | None) -> None:
        self._charge, self._sent = charge, 0

    def before_request(self, name: str) -> None:
        self._sent += 1
        if self._sent == 1 or self._charge is None:
            return
        wait = self._charge()
        if wait > 0:
            raise BudgetExhausted(
                f"scrape budget spent before request {self._sent} for @{name} (a redirect or "
                f"the page fallback); retry in {wait:.0f}s",
                retry_after=wait,
            )


class ProfileScraper:
    def __init__(self, web_url: str = "https://www.instagram.com", timeout: float = 10.0) -> None:
        self._meter = _Meter(None)
        self.web_url = web_url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = SCRAPE_MAX_BYTES
        self._session = new_session()
        self._redirects = RedirectPolicy(self.web_url)

    def fetch(self, username: str, charge: Charge | None = None) -> InstagramProfile:
        """``charge`` is asked before every request after the first, which the caller already
        paid for: redirect hops and the page fallback count against the same budget."""
        name = validate_username(username)
        self._meter = _Meter(charge)
        try:
            return self._from_json(name)
        except _Inconclusive:
            return self._from_html(name)

    # -- HTTP -------------------------------------------------------------------------------

    def _get(self, url: str, headers: dict[str, str], name: str) -> Answer:
        """GET following allowed redirects by hand, stopping at walls, all hops within one
        deadline."""
        label = Label(f"request for @{name}", "scrape")
        with Deadline(self.timeout) as deadline:
            for _ in range(MAX_REDIRECTS + 1):
                self._meter.before_request(name)
                answer = bounded_get(
                    self._session,
                    url,
                    headers={
                        "User-Agent": USER_AGENT,
                        "Accept-Language": "en-US,en;q=0.9",
                        **headers,
                    },
                    deadline=deadline,
                    max_bytes=self.max_bytes,
                    label=label,
                )
                if answer.location is None:
                    return answer
                url = self._redirect_target(url, answer, name)
        raise TransientError(
            f"more than {MAX_REDIRECTS} redirects for @{name}", reason="scrape_redirect_loop"
        )

    def _redirect_target(self, url: str, answer: Answer, name: str) -> str:
        target = urljoin(url, answer.location or "")
        if _is_wall(target):
            raise ScrapeBlocked(
                f"Instagram redirected the request for @{name} to {_path(target)[:80]} "
                "(login/challenge wall)",
                retry_after=_retry_after(answer, WALL_WAIT_SECONDS),
                reason="scrape_login_wall",
            )
        if not self._redirects.allows(target):
            raise TransientError(
                f"the request for @{name} was redirected off Instagram's hosts to "
                f"{urlsplit(target).scheme}://{host_of(target)}; not followed",
                reason="scrape_unexpected_redirect",
            )
        return target

    def _raise_for_block_or_outage(self, answer: Answer, name: str) -> None:
        if answer.status == 429:
            raise ScrapeBlocked(
                f"Instagram answered 429 Too Many Requests for @{name}",
                retry_after=_retry_after(answer, RATE_BLOCK_WAIT_SECONDS),
                reason="scrape_rate_limited",
            )
        if answer.status >= 500:
            raise TransientError(
                f"Instagram answered HTTP {answer.status} for @{name}",
                reason="scrape_server_error",
            )

    def _please_wait(self, answer: Answer, name: str) -> ScrapeBlocked:
        return ScrapeBlocked(
            f'Instagram answered "Please wait a few minutes" for @{name}',
            retry_after=_retry_after(answer, RATE_BLOCK_WAIT_SECONDS),
            reason="scrape_please_wait",
        )

    # -- stage 1: JSON ------------------------------------------------------------------------

    def _from_json(self, name: str) -> InstagramProfile:
        try:
            response = self._get(
                f"{self.web_url}/api/v1/users/web_profile_info/?username={name}",
                {"x-ig-app-id": IG_APP_ID, "X-Requested-With": "XMLHttpRequest", "Accept": "*/*"},
                name,
            )
        except ScrapeBlocked as exc:
            # The JSON endpoint is walled off far more often than the page: ask the page.
            if exc.reason == "scrape_login_wall":
                raise _Inconclusive from None
            raise
        self._raise_for_block_or_outage(response, name)
        body = response.json()
        if not isinstance(body, dict):
            raise _Inconclusive
        message = body.get("message")
        if isinstance(message, str) and _PLEASE_WAIT in message.lower():
            raise self._please_wait(response, name)
        data = body.get("data")
        user = data.get("user") if isinstance(data, dict) else None
        if response.status != 200 or not isinstance(user, dict):
            raise _Inconclusive
        require_same_account(name, user.get("username"), "Instagram", "scrape_profile_mismatch")
        try:
            return self._profile_from_user(name, user)
        except (MalformedCount, ValidationError):
            # A count or id that is not one: the answer is unusable, the page may still do.
            raise _Inconclusive from None

    def _profile_from_user(self, name: str, user: dict[str, Any]) -> InstagramProfile:
        edges = _dig(user, "edge_owner_to_timeline_media", "edges")
        media = [
            self._media(edge["node"])
            for edge in (edges if isinstance(edges, list) else [])
            if isinstance(edge, dict)
            and isinstance(edge.get("node"), dict)
            and edge["node"].get("id") is not None
        ]
        return InstagramProfile(
            username=name,
            id=str(user["id"]) if isinstance(user.get("id"), str | int) else user.get("id"),
            name=_text(user.get("full_name")) or None,
            biography=_text(user.get("biography")),
            profile_picture_url=_text(user.get("profile_pic_url_hd"))
            or _text(user.get("profile_pic_url")),
            followers_count=_count(user, "edge_followed_by", "count"),
            follows_count=_count(user, "edge_follow", "count"),
            media_count=_count(user, "edge_owner_to_timeline_media", "count"),
            website=_text(user.get("external_url")) or None,
            is_verified=user.get("is_verified")
            if isinstance(user.get("is_verified"), bool)
            else None,
            is_business_account=user.get("is_business_account")
            if isinstance(user.get("is_business_account"), bool)
            else None,
            source="scrape",
            method="web_profile_json",
            fetched_at=datetime.now(UTC),
            recent_media=media,
        )

    def _media(self, node: dict[str, Any]) -> RecentMedia:
        shortcode = _text(node.get("shortcode"))
        taken_at = node.get("taken_at_timestamp")
        likes = _count(node, "edge_liked_by", "count")
        return RecentMedia(
            id=str(node["id"]),
            caption=_text(_dig(node, "edge_media_to_caption", "edges", 0, "node", "text")),
            like_count=likes
            if likes is not None
            else _count(node, "edge_media_preview_like", "count"),
            comments_count=_count(node, "edge_media_to_comment", "count"),
            media_type=_MEDIA_TYPES.get(str(node.get("__typename"))),
            media_product_type=_PRODUCT_TYPES.get(str(node.get("product_type"))),
            permalink=f"{self.web_url}/p/{shortcode}/" if shortcode else None,
            timestamp=datetime.fromtimestamp(taken_at, UTC)
            if isinstance(taken_at, int) and not isinstance(taken_at, bool)
            else None,
        )

    # -- stage 2: HTML ------------------------------------------------------------------------

    def _from_html(self, name: str) -> InstagramProfile:
        response = self._get(
            f"{self.web_url}/{name}/",
            {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
            name,
        )
        if response.status == 404:
            raise AccountGone(
                f"Instagram has no public profile @{name} (HTTP 404)", reason="account_gone"
            )
        self._raise_for_block_or_outage(response, name)
        if response.status in (401, 403):
            raise ScrapeBlocked(
                f"Instagram refused the profile page of @{name} (HTTP {response.status})",
                retry_after=_retry_after(response, WALL_WAIT_SECONDS),
                reason="scrape_forbidden",
            )
        if response.status != 200:
            raise TransientError(
                f"Instagram answered HTTP {response.status} for the profile page of @{name}",
                reason="scrape_unexpected_status",
            )
        try:
            page = lxml.html.fromstring(response.body)
        except (etree.ParserError, ValueError):
            raise TransientError(
                f"the profile page of @{name} is empty or not HTML", reason="scrape_unreadable"
            ) from None
        og = {
            prop: page.xpath("string(//meta[@property=$p][1]/@content)", p=prop).strip() or None
            for prop in ("og:title", "og:description", "og:image", "og:url")
        }
        canonical = page.xpath("string(//link[@rel='canonical'][1]/@href)").strip()
        if any(_is_wall(u) for u in (og["og:url"], canonical) if u):
            raise ScrapeBlocked(
                f"Instagram served a login/consent page instead of @{name}",
                retry_after=WALL_WAIT_SECONDS,
                reason="scrape_login_wall",
            )
        counts = read_profile_counts(og["og:description"] or "")
        if not any(counts.values()):
            if any(_owner(og[what]) for what in ("og:title", "og:description")):
                raise TransientError(
                    f"the profile page of @{name} shows counts this reader cannot read "
                    "(an unsupported locale or a new template)",
                    reason="scrape_counts_unreadable",
                )
            raise self._blank_page(response, page, name)
        _require_page_of(name, og, canonical)
        shown: dict[str, Count] = {
            field: count for metric, field in _PAGE_COUNTS if (count := counts.get(metric))
        }
        return InstagramProfile(
            username=name,
            name=_name_from_title(og["og:title"], name),
            profile_picture_url=og["og:image"],
            followers_count=_value(shown.get("followers_count")),
            follows_count=_value(shown.get("follows_count")),
            media_count=_value(shown.get("media_count")),
            count_steps={field: c.step for field, c in shown.items() if c.step > 1},  # type: ignore[misc]
            is_verified=_verified(page, name),
            source="scrape",
            method="profile_html",
            fetched_at=datetime.now(UTC),
        )

    def _blank_page(
        self, response: Answer, page: lxml.html.HtmlElement, name: str
    ) -> InstagramError:
        """A 200 page without a single count: a rate page, a login form, a consent page, or
        something new. None of them is a refresh."""
        text = page.text_content().lower()
        if _PLEASE_WAIT in text:
            return self._please_wait(response, name)
        if page.xpath("//input[@name='password'] | //form[contains(@action, '/accounts/login')]"):
            return ScrapeBlocked(
                f"Instagram served a login form instead of @{name}",
                retry_after=WALL_WAIT_SECONDS,
                reason="scrape_login_wall",
            )
        if page.xpath("//form[contains(@action, '/consent')]") or any(
            marker in text for marker in _CONSENT_TEXTS
        ):
            return ScrapeBlocked(
                f"Instagram served a cookie consent page instead of @{name}",
                retry_after=WALL_WAIT_SECONDS,
                reason="scrape_consent",
            )
        if any(marker in text for marker in _RATE_TEXTS):
            return ScrapeBlocked(
                f"Instagram served a rate-limit page instead of @{name}",
                retry_after=_retry_after(response, RATE_BLOCK_WAIT_SECONDS),
                reason="scrape_rate_limited",
            )
        return TransientError(
            f"the profile page of @{name} shows no counts (no profile og:description)",
            reason="scrape_unrecognised_page",
        )


def _name_from_title(title: str | None, username: str) -> str | None:
    """'Full Name (@user) • Instagram photos and videos' -> 'Full Name'. Titles of accounts
    without a display name start with '@user', which gives None."""
    if not title:
        return None
    found = re.search(re.escape(f"(@{username})"), title, re.IGNORECASE)
    if found is None:
        return None
    return title[: found.start()].strip() or None


def _value(count: Count | None) -> int | None:
    return None if count is None else count.value


def _require_page_of(name: str, og: dict[str, str | None], canonical: str) -> None:
    """ProfileMismatch unless the page proves it is @``name``'s: ``(@name)`` in og:title or
    og:description, or an og:url / canonical link to ``/name/``; and none of them names
    another account (the first ``(@handle)`` of the title and of the description is the
    profile's owner in every locale's template)."""
    proofs = 0
    for what, url in (("og:url", og["og:url"]), ("canonical link", canonical)):
        if not url:
            continue
        if _names_other_account(url, name):
            raise ProfileMismatch(
                f"the profile page asked for @{name} has the {what} "
                f"{_path(url)[:80]!a}, another account's; nothing is written",
                reason="scrape_profile_mismatch",
            )
        proofs += 1
    for what in ("og:title", "og:description"):
        owner = _owner(og[what])
        if owner is None:
            continue
        if owner != name:
            raise ProfileMismatch(
                f"the profile page asked for @{name} has the {what} of @{owner}, another "
                "account; nothing is written",
                reason="scrape_profile_mismatch",
            )
        proofs += 1
    if not proofs:
        raise ProfileMismatch(
            f"the profile page asked for @{name} shows neither (@{name}) in its og:title or "
            "og:description nor a link to its own address, so it cannot be proven to be "
            "this account's; nothing is written",
            reason="scrape_profile_unproven",
        )


def _owner(text: str | None) -> str | None:
    """The handle a title or description shows as the profile's owner (lowercased)."""
    shown = _HANDLE.search(text or "")
    return None if shown is None else (shown[1] or shown[2]).lower()


def _embedded(script: str) -> Any:
    """The JSON a script carries (whole, or the object it assigns), or None."""
    text = script.strip()
    start, end = text.find("{"), text.rfind("}")
    for candidate in (text, text[start : end + 1] if 0 <= start < end else ""):
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    return None


def _verified(page: lxml.html.HtmlElement, name: str) -> bool | None:
    """``is_verified`` of the profile's own user object in the embedded page data: an object
    whose ``username`` is ``name``. Other users' objects (suggested accounts) do not count,
    and no such object, or contradicting ones, mean unknown."""
    seen: set[bool] = set()
    for script in page.xpath("//script/text()"):
        stack = [_embedded(str(script))]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(node)
            elif isinstance(node, dict):
                username, flag = node.get("username"), node.get("is_verified")
                own = isinstance(username, str) and username.lower() == name
                if own and isinstance(flag, bool):
                    seen.add(flag)
                stack.extend(node.values())
    return seen.pop() if len(seen) == 1 else None
