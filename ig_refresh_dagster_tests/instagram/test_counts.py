"""parse_count and parse_profile_description: examples, and properties over random counts
formatted the way each locale prints them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ig_refresh_dagster.instagram import parse_count, parse_profile_description


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the old consumer's cases
        ("100K", 100_000),
        ("1.5K", 1_500),
        ("1.5M", 1_500_000),
        ("10M", 10_000_000),
        ("2B", 2_000_000_000),
        ("5,000", 5_000),
        ("1,234,567", 1_234_567),
        ("2.5M", 2_500_000),
        # separators
        ("1,234", 1_234),
        ("1.234", 1_234),
        ("1 234", 1_234),
        ("1\u00a0234", 1_234),
        ("1\u202f234", 1_234),
        ("1'234'567", 1_234_567),
        ("1.234.567", 1_234_567),
        ("1.234.567,0", 1_234_567),
        ("12", 12),
        ("0", 0),
        ("\uff11\uff12\uff13", 123),  # full-width digits
        # abbreviations, with the decimal comma or point
        ("12.5K", 12_500),
        ("1,2 Mio.", 1_200_000),
        ("1,5 M", 1_500_000),
        ("12,3 mil", 12_300),
        ("2,5 k", 2_500),
        ("2,5\u00a0k", 2_500),
        ("1.234K", 1_234),
        ("3.4万", 34_000),
        ("1.2億", 120_000_000),
        ("1.2亿", 120_000_000),
        ("3.4萬", 34_000),
        ("1.2만", 12_000),
        ("3억", 300_000_000),
        ("12,3 тыс.", 12_300),
        ("1,2 млн", 1_200_000),
        ("4 млрд", 4_000_000_000),
        ("1,5 mi", 1_500_000),
        ("3,4 mln.", 3_400_000),
        ("2 Mrd.", 2_000_000_000),
        ("1,1 Md", 1_100_000_000),
        ("12 mila", 12_000),
        ("7 Tsd.", 7_000),
    ],
)
def test_parse_count_examples(text: str, expected: int) -> None:
    assert parse_count(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "Followers",
        "1.5",  # a fraction without an abbreviation is not a count
        "1,2,3",
        "12,34,567",  # lakh grouping is not used by Instagram
        "1..2",
        "1,234.567.8",
        "5X",
        "-5",
        "1e5",
        "1 2",
        "1,5 Zillionen",
        "K",
    ],
)
def test_parse_count_unknown_is_none_never_zero(text: str) -> None:
    assert parse_count(text) is None


def test_turkish_b_is_thousand_only_for_turkish() -> None:
    assert parse_count("12,3 B", locale="tr") == 12_300
    assert parse_count("12,3B") == 12_300_000_000
    assert parse_count("1,2 Mn", locale="tr") == 1_200_000


@dataclass(frozen=True)
class Style:
    """How one locale writes abbreviated counts."""

    name: str
    decimal: str
    units: dict[str, int]
    locale: str | None = None


STYLES = [
    Style("en", ".", {"K": 10**3, "M": 10**6, "B": 10**9}),
    Style("de", ",", {"\u00a0Tsd.": 10**3, "\u00a0Mio.": 10**6, "\u00a0Mrd.": 10**9}),
    Style("fr", ",", {"\u00a0k": 10**3, "\u00a0M": 10**6, "\u00a0Md": 10**9}),
    Style("es", ",", {" mil": 10**3, " M": 10**6}),
    Style("pt", ",", {" mil": 10**3, " mi": 10**6, " bi": 10**9}),
    Style("it", ",", {"K": 10**3, " Mln": 10**6, " Mld": 10**9}),
    Style("nl", ",", {"K": 10**3, " mln.": 10**6, " mld.": 10**9}),
    Style("ru", ",", {" тыс.": 10**3, " млн": 10**6, " млрд": 10**9}),
    Style("ja", ".", {"万": 10**4, "億": 10**8}),
    Style("zh", ".", {"万": 10**4, "亿": 10**8}),
    Style("ko", ".", {"천": 10**3, "만": 10**4, "억": 10**8}),
    Style("tr", ",", {" B": 10**3, " Mn": 10**6}, locale="tr"),
]
GROUPINGS = [",", ".", " ", "\u00a0", "\u202f", "'"]


@st.composite
def abbreviated(draw: st.DrawFn) -> tuple[str, int, float, str | None]:
    style = draw(st.sampled_from(STYLES))
    suffix, unit = draw(st.sampled_from(sorted(style.units.items())))
    digits = draw(st.integers(min_value=0, max_value=2))
    # Instagram picks the largest unit, so the mantissa is below 1000 (and at least 1).
    value = draw(st.integers(min_value=unit, max_value=1000 * unit - 1))
    mantissa = f"{value / unit:.{digits}f}"
    if float(mantissa) >= 1000:
        mantissa = f"{999.0:.{digits}f}"
        value = 999 * unit
    text = mantissa.replace(".", style.decimal) + suffix
    # the shown number can be off by half of its last digit
    tolerance = unit * 0.5 * 10**-digits
    return text, value, tolerance, style.locale


@given(abbreviated())
def test_abbreviated_counts_parse_within_their_rounding(
    case: tuple[str, int, float, str | None],
) -> None:
    text, value, tolerance, locale = case
    parsed = parse_count(text, locale=locale)
    assert parsed is not None, text
    assert abs(parsed - value) <= tolerance + 1, text


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(GROUPINGS))
def test_grouped_counts_parse_exactly(value: int, separator: str) -> None:
    text = f"{value:,}".replace(",", separator)
    assert parse_count(text) == value


@given(st.integers(min_value=0, max_value=10**12))
def test_plain_digits_parse_exactly(value: int) -> None:
    assert parse_count(str(value)) == value


@given(st.text(max_size=30))
def test_arbitrary_text_never_raises_and_never_invents_zero(text: str) -> None:
    parsed = parse_count(text)
    assert parsed is None or parsed >= 0
    if not any(ch.isdigit() for ch in text):
        assert parsed is None


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        (
            "50K Followers, 500 Following, 200 Posts - See Instagram photos and videos from "
            "Full Name (@username)",
            (50_000, 500, 200),
        ),
        ("1 Follower, 1 Following, 1 Post - See Instagram photos and videos", (1, 1, 1)),
        ("1,2 Mio. Follower, 500 gefolgt, 200 Beiträge", (1_200_000, 500, 200)),
        ("12,3 mil seguidores, 500 seguidos, 200 publicaciones", (12_300, 500, 200)),
        ("フォロワー3.4万人、フォロー中500人、投稿200件", (34_000, 500, 200)),
        ("3.4万粉丝,500关注,200帖子", (34_000, 500, 200)),
        ("12,3 B Takipçi, 500 Takip, 200 Gönderi", (12_300, 500, 200)),
        # a display name that contains a keyword must not be read as a count
        (
            "10 Followers, 5 Following, 1 Post - See Instagram photos and videos from "
            "Follower Fan, 99 Posts (@fan)",
            (10, 5, 1),
        ),
        # partly unreadable: the rest is still read, the unreadable part stays unknown
        ("many Followers, 500 Following, 200 Posts", (None, 500, 200)),
        ("Hola, que tal", (None, None, None)),
        ("", (None, None, None)),
    ],
)
def test_profile_description(description: str, expected: tuple) -> None:
    assert tuple(parse_profile_description(description)) == expected
