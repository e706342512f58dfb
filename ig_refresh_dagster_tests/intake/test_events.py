"""Parsing raw Kafka values into refresh events or named rejections, and planning a tick."""

from __future__ import annotations

import json
import sys

import pytest

from ig_refresh_dagster.intake.events import RefreshEvent, Rejection, RejectReason, parse_event
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.printable import DETAIL_LIMIT, printable, printable_bytes
from ig_refresh_dagster.intake.tick_plan import plan_tick

ID = "65a1b2c3d4e5f6a7b8c9d0e1"
OTHER = "75a1b2c3d4e5f6a7b8c9d0e2"


def event(**overrides: object) -> bytes:
    body = {"accountId": ID, "platform": "INSTAGRAM", "scheduledAt": "2026-11-28T10:00:00Z"}
    body.update(overrides)
    return json.dumps(body).encode()


def is_short_printable(text: str) -> bool:
    return len(text) <= DETAIL_LIMIT and all(" " <= c <= "~" for c in text)


def test_valid_event_is_parsed_with_canonical_account_id() -> None:
    parsed = parse_event(event(accountId=ID.upper(), platform="Instagram"))
    assert isinstance(parsed, RefreshEvent)
    assert parsed.account_id == ID


VALID_FIELDS = event()[1:-1]

HOSTILE = [
    (b"{not json", RejectReason.MALFORMED_JSON),
    (b"", RejectReason.MALFORMED_JSON),
    (None, RejectReason.MALFORMED_JSON),
    (b"\xff\xfe", RejectReason.MALFORMED_JSON),
    (b'{"accountId": "\xc3\x28"}', RejectReason.MALFORMED_JSON),
    (b"\xef\xbb\xbf" + event(), RejectReason.MALFORMED_JSON),
    (b"[" * 60_000, RejectReason.MALFORMED_JSON),
    (b'{"a":' * 10_000, RejectReason.MALFORMED_JSON),
    (
        b"{" + VALID_FIELDS + b', "x": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        RejectReason.MALFORMED_JSON,
    ),
    (b"{" + VALID_FIELDS + b', "x": NaN}', RejectReason.MALFORMED_JSON),
    (b"{" + VALID_FIELDS + b', "x": -Infinity}', RejectReason.MALFORMED_JSON),
    (b"{" + VALID_FIELDS + b', "x": 1e999}', RejectReason.MALFORMED_JSON),
    (b"{" + VALID_FIELDS + b', "x": ' + b"9" * 5000 + b"}", RejectReason.MALFORMED_JSON),
    (
        b"{" + VALID_FIELDS + b', "accountId": "' + OTHER.encode() + b'"}',
        RejectReason.DUPLICATE_KEY,
    ),
    (b"{" + VALID_FIELDS + b', "x": {"k": 1, "k": 2}}', RejectReason.DUPLICATE_KEY),
    (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
    (b'"just a string"', RejectReason.NOT_AN_OBJECT),
    (b"null", RejectReason.NOT_AN_OBJECT),
    (event(accountId={"$ne": None}), RejectReason.INVALID_FIELDS),
    (event(accountId="not-an-object-id"), RejectReason.INVALID_FIELDS),
    (event(accountId=ID + "0"), RejectReason.INVALID_FIELDS),
    (event(accountId=12345), RejectReason.INVALID_FIELDS),
    (event(accountId="\ud800" * 24), RejectReason.INVALID_FIELDS),
    (event(scheduledAt="yesterday"), RejectReason.INVALID_FIELDS),
    (event(scheduledAt=10**30), RejectReason.INVALID_FIELDS),
    (json.dumps({"accountId": ID, "platform": "INSTAGRAM"}).encode(), RejectReason.INVALID_FIELDS),
    (event(platform="TIKTOK"), RejectReason.UNSUPPORTED_PLATFORM),
    (event(platform="plätform\u202e\u2028"), RejectReason.UNSUPPORTED_PLATFORM),
    (
        b"{" + VALID_FIELDS + ', "é\u202e": 1, "é\u202e": 2}'.encode(),
        RejectReason.DUPLICATE_KEY,
    ),
    (event(platform="\x1b[2J\x00" + "x" * 5000), RejectReason.UNSUPPORTED_PLATFORM),
    (event(platform=["INSTAGRAM"]), RejectReason.INVALID_FIELDS),
]


@pytest.mark.parametrize(("value", "reason"), HOSTILE, ids=lambda v: printable(repr(v), 40))
def test_any_content_is_rejected_with_a_reason_and_a_short_printable_detail(
    value: bytes | None, reason: RejectReason
) -> None:
    parsed = parse_event(value)
    assert isinstance(parsed, Rejection)
    assert parsed.reason == reason
    assert parsed.detail
    assert is_short_printable(parsed.detail)


def test_duplicate_keys_are_rejected_by_name_not_resolved() -> None:
    """``{"accountId": A, ..., "accountId": B}`` refreshed B before: ambiguous, so refused."""
    parsed = parse_event(b"{" + VALID_FIELDS + b', "accountId": "' + OTHER.encode() + b'"}')
    assert isinstance(parsed, Rejection)
    assert parsed.detail == "duplicate key 'accountId'"


def test_deep_nesting_is_rejected_however_deep_the_callers_stack_already_is() -> None:
    """json's RecursionError depends on the stack depth of its caller; the depth bound does
    not, so a sensor deep inside Dagster's frames rejects the same message the same way."""

    def nested(frames: int) -> RefreshEvent | Rejection:
        if frames:
            return nested(frames - 1)
        return parse_event(b'{"x": ' + b"[" * 600 + b"]" * 600 + b"}")

    for frames in (0, sys.getrecursionlimit() - 200):
        parsed = nested(frames)
        assert isinstance(parsed, Rejection)
        assert parsed.detail == "nested deeper than 32 levels"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    parsed = parse_event(event(note="[" * 500 + "{" * 500 + '\\"['))
    assert isinstance(parsed, RefreshEvent)


def test_oversized_message_is_rejected_before_parsing() -> None:
    parsed = parse_event(event(padding="x" * 2000), max_bytes=1024)
    assert isinstance(parsed, Rejection)
    assert parsed.reason == RejectReason.OVERSIZED


@pytest.mark.parametrize(
    ("text", "expected"),
    [("plain", "plain"), ("\x1b[31m\n", "\\x1b[31m\\n"), ("é\ud800", "\\xe9\\ud800")],
)
def test_printable_escapes_everything_but_printable_ascii(text: str, expected: str) -> None:
    assert printable(text) == expected


def test_printable_cuts_long_text_and_marks_the_cut() -> None:
    assert printable("\x00" * 1000, 20) == "\\x00" * 4 + "..."
    assert printable_bytes(b"ok\xff") == "ok\\xff"


def _msg(offset: int, value: bytes | None, partition: int = 0) -> ConsumedMessage:
    return ConsumedMessage(
        topic="t", partition=partition, offset=offset, key=None, value=value, epoch="e1"
    )


def test_plan_accounts_for_every_message_and_keys_a_group_by_its_last_event() -> None:
    messages = [
        _msg(0, event()),
        _msg(1, b"garbage"),
        _msg(2, event(accountId=ID.upper())),
        _msg(0, event(accountId=OTHER), partition=1),
        _msg(3, event(scheduledAt="2026-11-28T11:00:00Z")),
    ]
    plan = plan_tick(messages)
    assert [(r.account_id, r.run_key, r.source) for r in plan.runs] == [
        (ID, "e1:0:3", "t:0:3"),
        (OTHER, "e1:1:0", "t:1:0"),
    ]
    assert plan.runs[0].coalesced == ["t:0:0", "t:0:2"]
    assert plan.runs[0].scheduled_at == "2026-11-28T11:00:00+00:00"
    assert [m.position for m, _ in plan.dead_letters] == ["t:0:1"]
    assert len(plan.runs) + plan.coalesced_count + len(plan.dead_letters) == len(messages)


def test_a_later_event_never_reuses_the_key_of_an_earlier_plan() -> None:
    """A tick read again from an older position (its run requests stored, its cursor not)
    must not fold a newer event into a key Dagster already used: keyed by the first event,
    the second plan's key was ``e1:0:0`` again and the event at offset 1 was skipped."""
    first = plan_tick([_msg(0, event())])
    again = plan_tick([_msg(0, event()), _msg(1, event())])
    assert first.runs[0].run_key == "e1:0:0"
    assert again.runs[0].run_key == "e1:0:1"
