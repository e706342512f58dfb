from __future__ import annotations

import json

import pytest

from ig_refresh_dagster.instagram import ApiUsage, parse_usage
from ig_refresh_dagster.instagram.usage import MAX_REGAIN_SECONDS


def _buc(*entries: dict) -> str:
    return json.dumps({"17841400000000001": list(entries)})


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        (
            {"X-App-Usage": json.dumps({"call_count": 28, "total_cputime": 25, "total_time": 40})},
            ApiUsage(max_percent=40),
        ),
        ({"x-app-usage": json.dumps({"call_count": 5})}, ApiUsage(max_percent=5)),
        (
            {
                "X-Business-Use-Case-Usage": _buc(
                    {
                        "type": "instagram",
                        "call_count": 91,
                        "total_cputime": 2,
                        "total_time": 3,
                        "estimated_time_to_regain_access": 0,
                    }
                )
            },
            ApiUsage(max_percent=91, regain_after_seconds=0),
        ),
        (
            {
                "X-App-Usage": json.dumps({"call_count": 10}),
                "X-Business-Use-Case-Usage": json.dumps(
                    {
                        "1": [{"call_count": 50, "estimated_time_to_regain_access": 5}],
                        "2": [
                            {
                                "call_count": 99,
                                "total_time": 100,
                                "estimated_time_to_regain_access": 12,
                            }
                        ],
                    }
                ),
            },
            ApiUsage(max_percent=100, regain_after_seconds=720),
        ),
        ({"X-App-Usage": "not json"}, None),
        ({"X-App-Usage": "[1, 2]"}, None),
        ({"X-App-Usage": json.dumps({"call_count": "high", "total_time": True})}, None),
        ({"X-App-Usage": json.dumps({"call_count": -3, "total_time": "NaN"})}, None),
        ({"X-Business-Use-Case-Usage": json.dumps({"1": "oops"})}, None),
        (
            {"X-Business-Use-Case-Usage": json.dumps({"1": [None, 3, {"call_count": "7"}]})},
            ApiUsage(max_percent=7),
        ),
        (
            {"X-Business-Use-Case-Usage": json.dumps({"1": {"call_count": 12}})},
            ApiUsage(max_percent=12),
        ),
    ],
)
def test_parse_usage(headers: dict[str, str], expected: ApiUsage | None) -> None:
    assert parse_usage(headers) == expected


@pytest.mark.parametrize("minutes", [60 * 24 * 365 * 1000, "1e300", 1e308])
def test_regain_estimate_is_capped_at_a_day(minutes: object) -> None:
    """An absurd estimate cannot pause Graph for years."""
    usage = parse_usage(
        {"X-Business-Use-Case-Usage": _buc({"estimated_time_to_regain_access": minutes})}
    )
    assert usage == ApiUsage(regain_after_seconds=MAX_REGAIN_SECONDS)
    assert MAX_REGAIN_SECONDS == 24 * 3600
