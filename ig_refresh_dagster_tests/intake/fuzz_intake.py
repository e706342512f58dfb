"""Coverage-guided fuzzing of the parse/plan path with atheris (libFuzzer), run by
``test_intake_properties.py`` with a bounded ``-runs``. Any exception is a crash: the
invariants below are asserted for every input."""

from __future__ import annotations

import sys

import atheris

# Dependencies first, uninstrumented: coverage feedback is then about our own modules.
import dagster  # noqa: F401  (imported by partitions.py)
import pydantic  # noqa: F401

with atheris.instrument_imports():
    from ig_refresh_dagster.intake import dlq_headers, strict_json  # noqa: F401
    from ig_refresh_dagster.intake.events import RejectReason
    from ig_refresh_dagster.intake.messages import ConsumedMessage
    from ig_refresh_dagster.intake.printable import DETAIL_LIMIT
    from ig_refresh_dagster.intake.tick_plan import plan_tick


def _batch(raw: bytes) -> list[ConsumedMessage]:
    """One flags byte picks the key, headers, a replay header and a second copy of the message
    (to reach coalescing); the rest of the input is the value, so mutations work on JSON."""
    data = atheris.FuzzedDataProvider(raw)
    flags = data.ConsumeInt(1)
    key = data.ConsumeBytes(flags & 0x07) if flags & 0x08 else None
    headers: list[tuple[str, bytes | None]] = [("h", None)] if flags & 0x10 else []
    if flags & 0x20:
        headers.append((dlq_headers.REPLAY_OF, data.ConsumeBytes(4)))
    value = data.ConsumeBytes(data.remaining_bytes()) or (None if flags & 0x40 else b"")
    message = ConsumedMessage(
        topic="t", partition=0, offset=0, key=key, value=value, headers=headers, epoch="e"
    )
    return [message, message.model_copy(update={"offset": 1})] if flags & 0x80 else [message]


def test_one_input(raw: bytes) -> None:
    batch = _batch(raw)
    plan = plan_tick(batch, max_bytes=1024)
    covered = [run.source for run in plan.runs]
    covered += [position for run in plan.runs for position in run.coalesced]
    covered += [message.position for message, _ in plan.dead_letters]
    assert sorted(covered) == sorted(m.position for m in batch), (covered, batch)
    for message, rejection in plan.dead_letters:
        assert rejection.reason != RejectReason.PARSER_ERROR, rejection.detail
        assert len(rejection.detail) <= DETAIL_LIMIT and rejection.detail.isascii()
        dlq_headers.whole(message, rejection)
        for keep in dlq_headers.TRUNCATION_STEPS:
            dlq_headers.truncated(message, rejection, keep)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
