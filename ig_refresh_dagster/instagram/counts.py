"""Human-formatted counts ("12,3 mil", "1.5M", "3.4万") as Instagram prints them per locale.

Unknown stays unknown: anything that cannot be read exactly returns None, never 0, because a 0
written to an account would look like a real (and alarming) follower count.

Separator rule, the only ambiguous case: a lone "." or "," followed by exactly three digits is a
thousands separator when no abbreviation follows ("1.234" = 1234) and a decimal point when one
does ("1.234K" = 1234, "1,5 M" = 1,500,000). Spaces (also NBSP and narrow NBSP) and apostrophes
only ever group thousands.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, NamedTuple

_K, _M, _B = 10**3, 10**6, 10**9
# Far above any real count (the most-followed account has under 10**9 followers) and inside
# 2**53, so a count survives BSON int64, JSON and JavaScript readers exactly.
MAX_COUNT = 10**12


class MalformedCount(ValueError):
    """A count in an answer is not a count: negative, too large, a bool, a float, or a string
    that is not plain ASCII digits ("²" passes ``str.isdigit``)."""


def strict_count(value: Any) -> int | None:
    """A count from a structured answer (Graph, the JSON endpoint): None when absent, else a
    non-negative int (or string of ASCII digits) up to MAX_COUNT, else MalformedCount."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 13:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise MalformedCount(f"{ascii(value)[:40]} is not a count")
    return value


class Count(NamedTuple):
    """A displayed count and its ``step``: 1 when exact ("12,487"), else the unit of the last
    digit shown ("12.5K": 100), so the true count lies within ``value ± step`` whether
    Instagram rounded or truncated it."""

    value: int
    step: int = 1

    def agrees_with(self, exact: int) -> bool:
        return abs(exact - self.value) <= self.step


# Abbreviations seen on instagram.com per locale, lowercased, trailing period dropped.
_SUFFIXES: dict[str, int] = {
    "k": _K,
    "tsd": _K,  # de
    "mil": _K,  # es, pt
    "mila": _K,  # it
    "тыс": _K,  # ru
    "천": _K,  # ko
    "千": _K,  # ja, zh
    "万": 10**4,  # ja, zh-Hans
    "萬": 10**4,  # zh-Hant
    "만": 10**4,  # ko
    "m": _M,
    "mio": _M,  # de
    "mln": _M,  # it, nl
    "mi": _M,  # pt ("1,2 mi")
    "mill": _M,  # es
    "mn": _M,
    "млн": _M,  # ru
    "億": 10**8,  # ja, zh-Hant
    "亿": 10**8,  # zh-Hans
    "억": 10**8,  # ko
    "b": _B,
    "bn": _B,
    "bi": _B,  # pt
    "mrd": _B,  # de
    "md": _B,  # fr
    "mld": _B,  # it, nl
    "млрд": _B,  # ru
}
# Where a locale reuses a letter for something else: Turkish "B" is bin (thousand).
_LOCALE_SUFFIXES: dict[str, dict[str, int]] = {
    "tr": {"b": _K, "bin": _K, "mn": _M, "mr": _B, "mlr": _B, "mly": _B},
}

# Separators: "." "," space, and ASCII or typographic (U+2019) apostrophe.
_SEPS = ".,' \u2019"
_NUMBER = re.compile(rf"(?P<num>\d(?:[\d{_SEPS}]*\d)?)\s*(?P<suffix>[^\d\s{_SEPS}][^\d]*)?")
_SEPARATOR = re.compile(rf"([{_SEPS}])")


def _normalise(text: str) -> str:
    """NFKC folds NBSP, narrow NBSP, thin spaces and full-width digits/commas to ASCII."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _digits(num: str, has_suffix: bool) -> tuple[str, str] | None:
    """Split a numeral into (integer digits, fraction digits), or None if malformed."""
    parts = _SEPARATOR.split(num)
    groups, seps = parts[0::2], parts[1::2]
    if any(not g for g in groups):
        return None
    if not seps:
        return groups[0], ""
    last = seps[-1]
    decimal = False
    if last in ".,":
        # With other separators, a different last one is the decimal point ("1.234,5");
        # alone, the three-digit rule of the module docstring decides.
        others = seps[:-1]
        decimal = any(s != last for s in others) if others else has_suffix or len(groups[-1]) != 3
    if decimal:
        int_groups, int_seps, fraction = groups[:-1], seps[:-1], groups[-1]
    else:
        int_groups, int_seps, fraction = groups, seps, ""
    if int_seps and (
        len(set(int_seps)) != 1
        or int_seps[0] == (last if decimal else None)
        or not 1 <= len(int_groups[0]) <= 3
        or any(len(g) != 3 for g in int_groups[1:])
    ):
        return None
    return "".join(int_groups), fraction


def parse_count(text: str, *, locale: str | None = None) -> int | None:
    """Parse one displayed count; ``locale`` only matters where abbreviations clash ("tr")."""
    count = read_count(text, locale=locale)
    return None if count is None else count.value


def read_count(text: str, *, locale: str | None = None) -> Count | None:
    """``parse_count`` with the precision of what was shown; None beyond MAX_COUNT too."""
    if not isinstance(text, str):
        return None
    match = _NUMBER.fullmatch(_normalise(text))
    if match is None:
        return None
    suffix = (match["suffix"] or "").strip().casefold().rstrip(".").strip()
    multiplier = 1
    if suffix:
        table = {**_SUFFIXES, **_LOCALE_SUFFIXES.get(locale or "", {})}
        if suffix not in table:
            return None
        multiplier = table[suffix]
    split = _digits(match["num"], bool(suffix))
    if split is None:
        return None
    whole, fraction = split
    try:
        value = Decimal(f"{whole}.{fraction or '0'}") * multiplier
    except InvalidOperation:
        return None
    if not suffix and value != value.to_integral_value():
        return None
    shown = int(value.to_integral_value(rounding=ROUND_HALF_UP))
    if shown > MAX_COUNT:
        return None
    return Count(shown, max(1, multiplier // 10 ** len(fraction)) if suffix else 1)


class ProfileCounts(NamedTuple):
    followers: int | None
    following: int | None
    posts: int | None


# (keyword as it appears in og:description, metric, locale). Matched longest first, so
# "takipçi" (followers) wins over its prefix "takip" (following).
_KEYWORDS: list[tuple[str, str, str]] = [
    *((k, "followers", "en") for k in ("followers", "follower")),
    ("following", "following", "en"),
    *((k, "posts", "en") for k in ("posts", "post")),
    ("gefolgt", "following", "de"),
    *((k, "posts", "de") for k in ("beiträge", "beitrag")),
    *((k, "followers", "fr") for k in ("abonnés", "abonnées", "abonné")),
    *((k, "following", "fr") for k in ("abonnements", "abonnement")),
    *((k, "posts", "fr") for k in ("publications", "publication")),
    *((k, "followers", "es") for k in ("seguidores", "seguidor")),
    *((k, "following", "es") for k in ("seguidos", "seguido")),
    *((k, "posts", "es") for k in ("publicaciones", "publicación")),
    ("seguindo", "following", "pt"),
    *((k, "posts", "pt") for k in ("publicações", "publicação")),
    *((k, "following", "it") for k in ("seguiti", "seguito")),
    *((k, "followers", "nl") for k in ("volgers", "volger")),
    ("volgend", "following", "nl"),
    *((k, "posts", "nl") for k in ("berichten", "bericht")),
    ("フォロワー", "followers", "ja"),
    ("フォロー中", "following", "ja"),
    ("投稿", "posts", "ja"),
    *((k, "followers", "zh") for k in ("粉丝", "粉絲")),
    *((k, "following", "zh") for k in ("正在关注", "已关注", "关注", "追蹤中", "追蹤")),
    *((k, "posts", "zh") for k in ("帖子", "贴文", "貼文")),
    ("팔로워", "followers", "ko"),
    *((k, "following", "ko") for k in ("팔로잉", "팔로우")),
    ("게시물", "posts", "ko"),
    *((k, "followers", "ru") for k in ("подписчиков", "подписчика", "подписчик")),
    *((k, "following", "ru") for k in ("подписок", "подписки", "подписка")),
    *((k, "posts", "ru") for k in ("публикаций", "публикации", "публикация")),
    ("takipçi", "followers", "tr"),
    ("takip", "following", "tr"),
    *((k, "posts", "tr") for k in ("gönderi", "gönderiler")),
]
_KEYWORDS.sort(key=lambda item: len(item[0]), reverse=True)
# Counter words that sit next to the number in CJK locales ("500人", "200 篇", "3.4만명").
_UNITS = "人件명개位篇則则个個 "
# The counts end at the first spaced dash ("… 200 Posts - See Instagram photos …").
_COUNTS_END = re.compile(r"\s[-\u2013\u2014]\s")
# Clause breaks: ", " anywhere, "," glued to a word (CJK), and CJK/Unicode list marks. A comma
# between digits ("1,234") is part of a number and never matches.
_CLAUSE = re.compile(r",\s+|(?<=[^\d\s]),|[、·•;]")


def parse_profile_description(desc: str) -> ProfileCounts:
    """Followers, following and posts from a profile page's og:description, in any of the
    supported locales (en, de, fr, es, pt, it, nl, ja, zh, ko, ru, tr). Unknown parts are None."""
    found = read_profile_counts(desc)
    return ProfileCounts(
        *(
            c.value if c else None
            for c in (found.get(m) for m in ("followers", "following", "posts"))
        )
    )


def read_profile_counts(desc: str) -> dict[str, Count | None]:
    """``parse_profile_description`` with each count's precision, keyed by metric
    ("followers", "following", "posts"); a metric not mentioned is absent."""
    if not isinstance(desc, str):
        return {}
    head = _COUNTS_END.split(_normalise(desc), maxsplit=1)[0]
    found: dict[str, Count | None] = {}
    for clause in _CLAUSE.split(head):
        lowered = clause.casefold()
        for keyword, metric, locale in _KEYWORDS:
            at = lowered.find(keyword)
            if at < 0:
                continue
            if metric not in found:
                rest = (lowered[:at] + " " + lowered[at + len(keyword) :]).strip(_UNITS)
                found[metric] = read_count(rest, locale=locale)
            break
    return found
