"""Parsing raw Kafka values into refresh events or named rejections."""

from __future__ import annotations

import json

import pytest

from ig_refresh_dagster.intake.events import RefreshEvent, Rejection, RejectReason, parse_event
from ig_refresh_dagster.intake.tick_plan import plan_tick
from ig_refresh_dagster.intake.topic_reader import ConsumedMessage

ID = "65a1b2c3d4e5f6a7b8c9d0e1"


def event(**overrides: object) -> bytes:
    body = {"accountId": ID, "platform": "INSTAGRAM", "scheduledAt": "2026-11-28T10:00:00Z"}
    body.update(overrides)
    return json.dumps(body).encode()


def test_valid_event_is_parsed_with_canonical_account_id() -> None:
    parsed = parse_event(event(accountId=ID.upper(), platform="Instagram"))
    assert isinstance(parsed, RefreshEvent)
    assert parsed.account_id == ID


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", RejectReason.MALFORMED_JSON),
        (b"", RejectReason.MALFORMED_JSON),
        (None, RejectReason.MALFORMED_JSON),
        (b"\xff\xfe", RejectReason.MALFORMED_JSON),
        (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
        (b'"just a string"', RejectReason.NOT_AN_OBJECT),
        (event(accountId={"$ne": None}), RejectReason.INVALID_FIELDS),
        (event(accountId="not-an-object-id"), RejectReason.INVALID_FIELDS),
        (event(accountId=ID + "0"), RejectReason.INVALID_FIELDS),
        (event(accountId=12345), RejectReason.INVALID_FIELDS),
        (event(scheduledAt="yesterday"), RejectReason.INVALID_FIELDS),
        (
            json.dumps({"accountId": ID, "platform": "INSTAGRAM"}).encode(),
            RejectReason.INVALID_FIELDS,
        ),
        (event(platform="TIKTOK"), RejectReason.UNSUPPORTED_PLATFORM),
        (event(platform=["INSTAGRAM"]), RejectReason.INVALID_FIELDS),
    ],
)
def test_bad_input_is_rejected_with_a_reason(value: bytes | None, reason: RejectReason) -> None:
    parsed = parse_event(value)
    assert isinstance(parsed, Rejection)
    assert parsed.reason == reason
    assert parsed.detail


def test_oversized_message_is_rejected_before_parsing() -> None:
    parsed = parse_event(event(padding="x" * 2000), max_bytes=1024)
    assert isinstance(parsed, Rejection)
    assert parsed.reason == RejectReason.OVERSIZED


def _msg(offset: int, value: bytes | None, partition: int = 0) -> ConsumedMessage:
    return ConsumedMessage(topic="t", partition=partition, offset=offset, key=None, value=value)


def test_plan_accounts_for_every_message() -> None:
    other = "75a1b2c3d4e5f6a7b8c9d0e2"
    messages = [
        _msg(0, event()),
        _msg(1, b"garbage"),
        _msg(2, event(accountId=ID.upper())),
        _msg(0, event(accountId=other), partition=1),
        _msg(3, event()),
    ]
    plan = plan_tick(messages)
    assert [(r.account_id, r.run_key) for r in plan.runs] == [(ID, "t:0:0"), (other, "t:1:0")]
    assert plan.runs[0].coalesced == ["t:0:2", "t:0:3"]
    assert [m.source for m, _ in plan.dead_letters] == ["t:0:1"]
    assert len(plan.runs) + plan.coalesced_count + len(plan.dead_letters) == len(messages)
