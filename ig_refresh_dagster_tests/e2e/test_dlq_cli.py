"""``ig-refresh dlq list`` and ``dlq replay`` end to end on the real broker: dead letters made
by the real sensor, summarised, replayed to the refresh topic, and read back by the sensor."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
import redis
from bson import ObjectId
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from ig_refresh_dagster.cli import main
from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.devstack.seed import demo_accounts, seed_accounts
from ig_refresh_dagster.intake import dlq_headers
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.dead_letter_log import DeadLetterSummary
from ig_refresh_dagster.intake.dead_letters import DeadLetterPublisher
from ig_refresh_dagster.intake.events import Rejection, RejectReason
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.replay import ReplayReport
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.daemon_helpers import dagster_home, start_daemon
from ig_refresh_dagster_tests.support.kafka_helpers import (
    BIG,
    account_ids,
    kafka_resource,
    produce,
    read_topic,
    refresh_event,
    tick,
)
from ig_refresh_dagster_tests.support.refresh_helpers import TOKEN


class DeadLetters(NamedTuple):
    accounts: list[str]
    # The cursor after the tick that dead-lettered them: reading on from it sees only replays.
    cursor: str


@pytest.fixture
def dead_letters(
    topics: Topics, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> DeadLetters:
    """Four dead letters at source offsets 0-3 of partition 0: two valid events refused as
    oversized under a 4 KiB limit (replayable once the limit is raised), a broken one and a
    TikTok one. The CLI's environment points at the test's topics."""
    a, b = account_ids(2)
    padded = {"padding": "x" * 5000}
    topics.publish([refresh_event(a, **padded)], partition=0, key=b"ka", headers=[("trace", b"1")])
    topics.publish([refresh_event(b, **padded), b"{broken", refresh_event(a, platform="TIKTOK")], 0)
    result = tick(instance, kafka_resource(topics, max_message_bytes=4096), None)
    assert result.run_requests == []
    point_cli_at(topics, monkeypatch)
    return DeadLetters([a, b], result.cursor)


def point_cli_at(topics: Topics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", topics.bootstrap)
    monkeypatch.setenv("INSTAGRAM_REFRESH_TOPIC", topics.refresh)
    monkeypatch.setenv("INSTAGRAM_REFRESH_DLQ_TOPIC", topics.dlq)


def cli(capsys: pytest.CaptureFixture, *argv: str) -> str:
    capsys.readouterr()
    assert main(["dlq", *argv]) == 0
    return capsys.readouterr().out


def test_dlq_list_summarises_by_reason_and_age(dead_letters: DeadLetters, capsys) -> None:
    summary = DeadLetterSummary.model_validate_json(cli(capsys, "list", "--json"))
    assert summary.total == 4
    counts = {row.reason: row.count for row in summary.reasons}
    assert counts == {"oversized": 2, "malformed_json": 1, "unsupported_platform": 1}
    assert summary.reasons[0].reason == "oversized"
    now = datetime.now(UTC)
    assert summary.oldest <= summary.newest <= now
    assert now - summary.oldest < timedelta(hours=1)
    text = cli(capsys, "list")
    assert "4 message(s)" in text
    assert "oversized" in text and "ago" in text


def test_dlq_replay_republishes_originals_and_the_sensor_runs_each_once(
    topics: Topics, instance: DagsterInstance, dead_letters: DeadLetters, capsys
) -> None:
    report = ReplayReport.model_validate_json(
        cli(capsys, "replay", "--reason", "oversized", "--json")
    )
    assert (report.selected, report.replayed) == (2, 2)
    replayed = sorted(
        (
            m
            for m in read_topic(topics.bootstrap, topics.refresh)
            if m.header(dlq_headers.REPLAY_OF)
        ),
        key=lambda m: m.header(dlq_headers.REPLAY_OF),
    )
    assert [m.key for m in replayed] == [b"ka", None]
    assert [k for k, _ in replayed[0].headers] == ["trace", dlq_headers.REPLAY_OF]
    assert replayed[0].header("trace") == b"1"
    for dlq_offset, message in enumerate(replayed):
        replay_of = message.header(dlq_headers.REPLAY_OF).decode()
        assert re.fullmatch(rf"{re.escape(topics.dlq)}:0:{dlq_offset}@\d+", replay_of)

    first = tick(instance, kafka_resource(topics), dead_letters.cursor)
    assert sorted(r.partition_key for r in first.run_requests) == sorted(dead_letters.accounts)
    cli(capsys, "replay", "--reason", "oversized")
    second = tick(instance, kafka_resource(topics), first.cursor)
    # Read once more under a fresh cursor (a new epoch): still the same keys.
    fresh = tick(instance, kafka_resource(topics, start_from="earliest"), None)
    keys = {r.run_key for r in first.run_requests}
    assert {r.run_key for r in second.run_requests} == keys
    assert keys <= {r.run_key for r in fresh.run_requests}
    for request in first.run_requests:
        assert request.run_key.startswith("replay-")
        assert request.tags["ig-refresh/replay-of"].startswith(f"{topics.dlq}:0:")


def test_replay_is_never_coalesced_with_an_ordinary_event(
    topics: Topics, instance: DagsterInstance, dead_letters: DeadLetters, capsys
) -> None:
    a = dead_letters.accounts[0]
    cli(capsys, "replay", "--source-offset", "0:0")
    topics.publish([refresh_event(a)], partition=0)
    result = tick(instance, kafka_resource(topics), dead_letters.cursor)
    assert [r.partition_key for r in result.run_requests] == [a, a]
    assert sum(r.run_key.startswith("replay-") for r in result.run_requests) == 1
    assert all("ig-refresh/coalesced-events" not in r.tags for r in result.run_requests)


def test_dlq_replay_filters_by_source_offset_and_time_and_dry_run_publishes_nothing(
    topics: Topics, dead_letters: DeadLetters, capsys
) -> None:
    def selected(*argv: str) -> ReplayReport:
        return ReplayReport.model_validate_json(cli(capsys, "replay", "--json", *argv))

    by_offset = selected("--source-offset", "0:2", "--source-offset", "0:3", "--dry-run")
    assert [item.source.rsplit(":", 1)[1] for item in by_offset.items] == ["2", "3"]
    assert [item.outcome for item in by_offset.items] == ["would replay"] * 2
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert selected("--since", future, "--dry-run").selected == 0
    assert selected("--until", past, "--dry-run").selected == 0
    assert selected("--since", past, "--until", future, "--dry-run").selected == 4
    assert len(read_topic(topics.bootstrap, topics.refresh)) == 4, "dry runs published nothing"


def test_dlq_replay_without_a_filter_is_refused(dead_letters: DeadLetters) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dlq", "replay"])
    assert exit_info.value.code == 2


def test_truncated_dead_letters_are_not_replayed(
    topics: Topics, instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    produce(topics.bootstrap, topics.refresh, [{"value": b"x" * BIG, "partition": 0}])
    tick(instance, kafka_resource(topics), None)
    point_cli_at(topics, monkeypatch)
    report = ReplayReport.model_validate_json(cli(capsys, "replay", "--all", "--json"))
    assert [item.outcome for item in report.items] == ["skipped: truncated"]
    assert report.replayed == 0


def test_dlq_list_of_a_missing_topic_fails_clearly(
    topics: Topics, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    point_cli_at(topics, monkeypatch)
    monkeypatch.setenv("INSTAGRAM_REFRESH_DLQ_TOPIC", "no-such.dlq")
    assert main(["dlq", "list"]) == 1
    assert "dead-letter topic 'no-such.dlq' does not exist" in capsys.readouterr().err


TERMINAL = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


@contextmanager
def running_daemon(
    tmp_path: Path, topics: Topics, redis_url: str, mongo_uri: str, standin: InstagramStandin
) -> Iterator[DagsterInstance]:
    """A real ``dagster-daemon`` over the code location, pointed at the test's services."""
    home = dagster_home(tmp_path)
    process = start_daemon(home, topics, redis_url, mongo_uri, standin, tmp_path / "daemon.log")
    instance = DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        process.stop()
        instance.dispose()


def finished_runs(instance: DagsterInstance, per_account: dict[str, int]) -> list:
    """Waits (bounded) until each account has that many runs and none is still going."""
    deadline = time.monotonic() + 240  # a daemon starting on a loaded machine: 150 s was short
    while time.monotonic() < deadline:
        runs = instance.get_runs(RunsFilter(job_name="instagram_refresh_job"))
        counts = Counter(r.tags.get("dagster/partition") for r in runs)
        if all(counts[a] >= n for a, n in per_account.items()) and all(
            r.status in TERMINAL for r in runs
        ):
            return runs
        time.sleep(1)
    pytest.fail(f"runs did not finish: {[(r.tags, r.status) for r in runs]}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_replaying_a_dead_letter_twice_refreshes_once_under_the_real_daemon(
    tmp_path: Path,
    topics: Topics,
    redis_url_for_test: str,
    redis_client: redis.Redis,
    mongo_uri: str,
    mongo_db,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    """Dagster's own run-key dedupe in a real ``dagster-daemon``: the second replay of the
    same dead letter is read by the sensor (an event published behind it on its partition is
    refreshed) and requests the key already used, so no second run starts."""
    by_name = {a.username: a for a in demo_accounts()}
    acme, bluebird = by_name["acme.studio"], by_name["bluebird.bakery"]
    seed_accounts(mongo_db, redis_client, [acme, bluebird])
    original = ConsumedMessage(
        topic="an-old-topic",
        partition=0,
        offset=9,
        key=b"k",
        value=refresh_event(acme.account_id),
        epoch="e",
    )
    DeadLetterPublisher(KafkaConnection(bootstrap_servers=topics.bootstrap), topics.dlq).publish(
        [(original, Rejection(reason=RejectReason.INVALID_FIELDS, detail="a since-fixed bug"))]
    )
    point_cli_at(topics, monkeypatch)
    cli(capsys, "replay", "--all")
    with (
        InstagramStandin(token=TOKEN) as standin,
        running_daemon(tmp_path, topics, redis_url_for_test, mongo_uri, standin) as instance,
    ):
        finished_runs(instance, {acme.account_id: 1})
        cli(capsys, "replay", "--all")
        replays = [m for m in read_topic(topics.bootstrap, topics.refresh) if m.key == b"k"]
        assert len(replays) == 2 and len({m.partition for m in replays}) == 1
        topics.publish([refresh_event(bluebird.account_id)], partition=replays[0].partition)
        runs = finished_runs(instance, {acme.account_id: 1, bluebird.account_id: 1})
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(
        [acme.account_id, bluebird.account_id]
    )
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    assert mongo_db["DataRefreshLog"].count_documents({"accountId": ObjectId(acme.account_id)}) == 1
