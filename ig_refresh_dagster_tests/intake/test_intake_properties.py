"""Properties of the parse/plan path over arbitrary messages (Hypothesis), and a short
coverage-guided run of the same path with atheris in a subprocess (``fuzz_intake.py``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ig_refresh_dagster.intake import dlq_headers
from ig_refresh_dagster.intake.events import RejectReason
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.tick_plan import plan_tick
from ig_refresh_dagster.refresh.launch.intake_sensor import run_request

VALID = (
    b'{"accountId": "65a1b2c3d4e5f6a7b8c9d0e1", "platform": "INSTAGRAM", '
    b'"scheduledAt": "2026-11-28T10:00:00Z"}'
)
IDS = ["65a1b2c3d4e5f6a7b8c9d0e1", "75A1B2C3D4E5F6A7B8C9D0E2", "85a1b2c3d4e5f6a7b8c9d0e3"]
MAX_RUN_KEY = 40
PRINTABLE = re.compile(r"^[ -~]*$")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
near_events = st.fixed_dictionaries(
    {
        "accountId": st.sampled_from(IDS) | json_values,
        "platform": st.sampled_from(["INSTAGRAM", " instagram ", "TIKTOK"]) | json_values,
        "scheduledAt": st.sampled_from(["2026-11-28T10:00:00Z", "2026-11-28"]) | json_values,
    },
    optional={"extra": json_values},
).map(lambda body: json.dumps(body, allow_nan=True).encode())


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    """A near-valid event with raw bytes spliced in: duplicate keys, NaN, deep brackets..."""
    body = draw(near_events)
    insert = draw(
        st.sampled_from(
            [b', "accountId": "' + IDS[1].encode() + b'"', b', "x": NaN', b', "x": 1e999']
        )
        | st.binary(max_size=16)
        | st.integers(1, 3000).map(lambda n: b', "x": ' + b"[" * n)
    )
    return body[:-1] + insert + body[-1:]


valid_events = st.builds(
    lambda account, platform, extra: json.dumps(
        {"accountId": account, "platform": platform, "scheduledAt": "2026-11-28T10:00:00Z", **extra}
    ).encode(),
    st.sampled_from(IDS),
    st.sampled_from(["INSTAGRAM", "instagram"]),
    st.dictionaries(st.sampled_from(["note", "retry"]), json_values, max_size=1),
)
values = st.one_of(
    st.none(), st.binary(max_size=256), valid_events, valid_events, near_events, spliced()
)
headers = st.lists(st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=16)), max_size=3)
replay_headers = st.lists(
    st.tuples(st.just(dlq_headers.REPLAY_OF), st.none() | st.binary(max_size=8)), max_size=1
)
messages = st.builds(
    ConsumedMessage,
    topic=st.just("t"),
    partition=st.integers(0, 2),
    offset=st.just(0),
    key=st.none() | st.binary(max_size=32),
    value=values,
    headers=st.builds(lambda a, b: a + b, headers, replay_headers),
    epoch=st.just("0123456789ab"),
)


def unique_positions(batch: list[ConsumedMessage]) -> list[ConsumedMessage]:
    return [m.model_copy(update={"offset": i}) for i, m in enumerate(batch)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, max_size=8).map(unique_positions))
def test_every_message_becomes_exactly_one_run_coalesced_event_or_dead_letter(
    batch: list[ConsumedMessage],
) -> None:
    plan = plan_tick(batch, max_bytes=4096)
    keyed = [run.source for run in plan.runs]
    coalesced = [position for run in plan.runs for position in run.coalesced]
    dead = [message.position for message, _ in plan.dead_letters]
    assert sorted(keyed + coalesced + dead) == sorted(m.position for m in batch)
    event(f"runs: {bool(plan.runs)}, coalesced: {bool(coalesced)}, dead letters: {bool(dead)}")
    for _, rejection in plan.dead_letters:
        event(f"reason {rejection.reason.value}")
    assert len({run.run_key for run in plan.runs}) == len(plan.runs)
    for run in plan.runs:
        assert len(run.run_key) <= MAX_RUN_KEY
        request = run_request(run)
        assert all(PRINTABLE.match(value) and len(value) <= 200 for value in request.tags.values())
    for message, rejection in plan.dead_letters:
        assert rejection.reason != RejectReason.PARSER_ERROR, rejection.detail
        assert PRINTABLE.match(rejection.detail) and len(rejection.detail) <= 200
        letter = dlq_headers.whole(message, rejection)
        ours = [(k, v) for k, v in letter.headers if k.startswith(dlq_headers.PREFIX)]
        assert all(PRINTABLE.match(v.decode("ascii")) for _, v in ours[-5:])
        for keep in dlq_headers.TRUNCATION_STEPS:
            dlq_headers.truncated(message, rejection, keep)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512), st.none() | st.binary(max_size=64), headers)
def test_arbitrary_bytes_in_value_key_and_headers_never_raise(
    value: bytes, key: bytes | None, header_list: list[tuple[str, bytes | None]]
) -> None:
    message = ConsumedMessage(
        topic="t", partition=0, offset=0, key=key, value=value, headers=header_list, epoch="e"
    )
    plan = plan_tick([message])
    assert len(plan.runs) + len(plan.dead_letters) == 1


FUZZ_RUNS = 30_000


def test_coverage_guided_fuzzing_of_the_parse_plan_path_finds_no_crash(tmp_path: Path) -> None:
    """atheris (libFuzzer) mutates inputs towards new coverage of the instrumented intake
    modules; ``fuzz_intake.py`` asserts the same invariants and any exception is a crash.
    A subprocess, because ``atheris.Fuzz`` ends its process."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # Each input is a flags byte (key, headers, replay header, a second copy) and the value.
    seeds = [b"\xc0" + VALID, b"\xb8" + VALID, b"\x00[[[{}]]]", b'\x00{"a": 1, "a": 2}']
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ig_refresh_dagster_tests.intake.fuzz_intake",
            f"-runs={FUZZ_RUNS}",
            "-seed=1",
            "-max_len=4096",
            f"-dict={Path(__file__).with_name('fuzz_intake.dict')}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {FUZZ_RUNS} runs" in result.stderr
