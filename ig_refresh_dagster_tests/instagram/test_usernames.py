from __future__ import annotations

import pytest

from ig_refresh_dagster.instagram import InvalidUsername, validate_username


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("natgeo", "natgeo"),
        ("  NatGeo  ", "natgeo"),
        ("@acme.studio", "acme.studio"),
        ("__under__", "__under__"),
        ("a", "a"),
        ("a.b.c", "a.b.c"),
        ("x" * 30, "x" * 30),
        ("user_2024", "user_2024"),
    ],
)
def test_valid(raw: str, expected: str) -> None:
    assert validate_username(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "@",
        "x" * 31,
        "has space",
        "semi;colon",
        "slash/name",
        "../etc",
        ".leading",
        "trailing.",
        "two..dots",
        "emoji😀",
        "ümlaut",
        "name){id}",
        "name?x=1",
    ],
)
def test_invalid(raw: str) -> None:
    with pytest.raises(InvalidUsername) as info:
        validate_username(raw)
    assert info.value.reason == "invalid_username"


def test_non_string_is_invalid() -> None:
    with pytest.raises(InvalidUsername):
        validate_username(None)  # type: ignore[arg-type]
