"""Intake guarantees under faults, on the real embedded broker: hostile topics, lost cursors,
recreated topics, cutover from the old consumer group, refused commits, and a dead-letter
topic that is missing, down, or refuses large records."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
import redis
from bson import ObjectId
from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from dagster import DagsterInstance, SensorResult

from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.devstack.seed import demo_accounts, seed_accounts
from ig_refresh_dagster.devstack.services import free_port
from ig_refresh_dagster.devstack.stack import EMBEDDED_BROKER_FETCH_WAIT_MS
from ig_refresh_dagster.intake import dlq_headers
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.cursor import TopicCursor
from ig_refresh_dagster.intake.dead_letters import DeadLetterError, DeadLetterPublisher
from ig_refresh_dagster.intake.events import Rejection, RejectReason
from ig_refresh_dagster.intake.messages import ConsumedMessage
from ig_refresh_dagster.intake.tick_plan import plan_tick
from ig_refresh_dagster.intake.topic_reader import PollLimits, TopicReader, consumed
from ig_refresh_dagster.refresh.run.resources import GROUP_ID
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.intake.test_events import HOSTILE
from ig_refresh_dagster_tests.support.kafka_helpers import (
    BIG,
    account_ids,
    committed_offsets,
    kafka_resource,
    produce,
    read_topic,
    refresh_event,
    tick,
)
from ig_refresh_dagster_tests.support.refresh_helpers import TOKEN, job_resources, run_refresh


def run_keys(result: SensorResult) -> set[str]:
    return {r.run_key for r in result.run_requests}


def drain(instance: DagsterInstance, resource, cursor: str | None, ticks: int = 8) -> tuple:
    """Ticks until one reads nothing; every run request and the last cursor."""
    requests = []
    for _ in range(ticks):
        result = tick(instance, resource, cursor)
        cursor = result.cursor
        requests += result.run_requests
        if result.skip_reason is not None:
            return requests, cursor
    pytest.fail(f"topic not drained in {ticks} ticks")


def topic_exists(bootstrap: str, topic: str) -> bool:
    future = AdminClient({"bootstrap.servers": bootstrap}).describe_topics(
        TopicCollection([topic])
    )[topic]
    try:
        future.result(5)
    except Exception:
        return False
    return True


# --- any message ends somewhere ------------------------------------------------------------


@pytest.mark.slow
def test_hostile_topic_is_dead_lettered_and_valid_events_behind_it_are_refreshed(
    topics: Topics,
    instance: DagsterInstance,
    mongo_uri: str,
    mongo_db,
    redis_url_for_test: str,
    redis_client: redis.Redis,
) -> None:
    by_name = {a.username: a for a in demo_accounts()}
    valid_accounts = [by_name["acme.studio"], by_name["sam.outdoors"]]
    seed_accounts(mongo_db, redis_client, valid_accounts)
    hostile: list[dict[str, Any]] = [{"value": value} for value, _ in HOSTILE]
    hostile += [
        {"value": b"\x00" * BIG},
        {"value": b"{}", "headers": [("padding", b"\xff" * BIG)]},
        {"value": None, "key": b"\x00\xff" * 10, "headers": [("h", None), ("b", b"\xff\x00")]},
        {"value": b"\x1b[2J" * 100, "key": b"\xfe" * 300_000},
    ]
    valid = [
        {
            "value": refresh_event(valid_accounts[0].account_id),
            "key": b"\xff",
            "headers": [("x", None)],
        },
        {"value": refresh_event(valid_accounts[1].account_id)},
    ]
    produce(topics.bootstrap, topics.refresh, [dict(r, partition=0) for r in hostile + valid])

    requests, cursor = drain(instance, kafka_resource(topics), None)

    assert sorted(r.partition_key for r in requests) == sorted(a.account_id for a in valid_accounts)
    assert TopicCursor.model_validate_json(cursor).offsets == {0: len(hostile) + len(valid)}
    dead = read_topic(topics.bootstrap, topics.dlq)
    dead_offsets = sorted(int(m.header(dlq_headers.SOURCE_OFFSET)) for m in dead)
    assert dead_offsets == list(range(len(hostile))), "each hostile message dead-lettered once"
    truncated = [m for m in dead if m.header(dlq_headers.TRUNCATED)]
    assert len(truncated) == 2
    with InstagramStandin(token=TOKEN) as standin:
        resources = job_resources(mongo_uri, redis_url_for_test, standin.graph_url, standin.web_url)
        for request in requests:
            assert run_refresh(request.partition_key, resources, instance).success
    for account in valid_accounts:
        doc = mongo_db["Account"].find_one({"_id": ObjectId(account.account_id)})
        assert doc["lastDataRefresh"] is not None


def test_header_names_that_are_not_utf8_drop_the_headers_not_the_message() -> None:
    """confluent-kafka decodes header names lazily and raises on bytes that are not UTF-8;
    its own producer cannot write such a name (it writes ``str(key)``), so the fetched
    message is stood in for by a ``Message`` whose ``headers()`` raises as it would."""

    class BadHeaders(Message):
        def headers(self):
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    notes: list[str] = []
    message = consumed(BadHeaders(topic="t", partition=0, offset=7, value=b"v"), "e", notes)
    assert message.headers == [] and message.value == b"v"
    assert notes == ["t:0:7: header names are not UTF-8; headers dropped"]


# --- dead letters that cannot be written whole ----------------------------------------------


def rejected(value: bytes, **fields: Any) -> tuple[ConsumedMessage, Rejection]:
    message = ConsumedMessage(
        topic="src", partition=2, offset=41, key=b"k", value=value, epoch="e", **fields
    )
    return message, Rejection(reason=RejectReason.OVERSIZED, detail="too big")


def test_value_over_the_producer_limit_is_dead_lettered_truncated_with_size_and_hash(
    topics: Topics,
) -> None:
    value = bytes(range(256)) * (BIG // 256)
    publisher = DeadLetterPublisher(KafkaConnection(bootstrap_servers=topics.bootstrap), topics.dlq)
    report = publisher.publish([rejected(value, headers=[("trace", b"t1")])])
    assert (report.written, report.truncated) == (1, 1)
    (letter,) = read_topic(topics.bootstrap, topics.dlq)
    assert letter.value == value[: dlq_headers.TRUNCATION_STEPS[0]]
    assert letter.key == b"k"
    assert letter.header("trace") == b"t1"
    assert letter.header(dlq_headers.TRUNCATED) == b"value"
    assert letter.header(dlq_headers.ORIGINAL_SIZE) == str(len(value)).encode()
    assert letter.header(dlq_headers.ORIGINAL_SHA256) == hashlib.sha256(value).hexdigest().encode()
    assert letter.header(dlq_headers.SOURCE_TOPIC) == b"src"
    assert letter.header(dlq_headers.SOURCE_PARTITION) == b"2"
    assert letter.header(dlq_headers.SOURCE_OFFSET) == b"41"
    assert letter.header(dlq_headers.REASON) == b"oversized"


class TopicWithSizeLimit:
    """The dead-letter producer, but records over ``limit`` bytes are refused in their
    delivery report (``MSG_SIZE_TOO_LARGE``), as a broker does for a topic with a lower
    ``max.message.bytes``. The embedded broker enforces no such limit (a 20 MB record into a
    topic created with ``max.message.bytes=1000`` was accepted, measured), so the refusal is
    simulated here; everything under the limit is produced for real."""

    def __init__(self, real: Producer, limit: int) -> None:
        self.real, self.limit, self.refused = real, limit, []

    def produce(self, topic: str, value: bytes | None = None, on_delivery=None, **kw: Any) -> None:
        if len(value or b"") > self.limit:
            self.refused.append(len(value))
            on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            return
        self.real.produce(topic, value=value, on_delivery=on_delivery, **kw)

    def flush(self, timeout: float) -> int:
        return self.real.flush(timeout)


def test_record_refused_on_delivery_as_too_large_is_cut_until_the_topic_takes_it(
    topics: Topics,
) -> None:
    publisher = DeadLetterPublisher(KafkaConnection(bootstrap_servers=topics.bootstrap), topics.dlq)
    limited = TopicWithSizeLimit(publisher._producer, limit=10_000)
    publisher._producer = limited
    value = b"v" * 50_000
    publisher.publish([rejected(value)])
    assert limited.refused == [50_000, dlq_headers.TRUNCATION_STEPS[0]]
    (letter,) = read_topic(topics.bootstrap, topics.dlq)
    assert letter.value == value[: dlq_headers.TRUNCATION_STEPS[1]]
    assert letter.header(dlq_headers.ORIGINAL_SIZE) == b"50000"


def test_missing_dead_letter_topic_fails_the_tick_loudly_and_is_not_auto_created(
    topics: Topics, instance: DagsterInstance
) -> None:
    """The embedded broker auto-creates a topic on first produce (measured): producing
    blindly would have invented the dead-letter topic, so it is checked first."""
    (a,) = account_ids(1)
    topics.publish([b"{broken", refresh_event(a)], partition=0)
    missing = f"{topics.dlq}-missing"
    with pytest.raises(DeadLetterError, match=f"dead-letter topic '{missing}' does not exist"):
        tick(instance, kafka_resource(topics, dlq_topic=missing), None)
    assert not topic_exists(topics.bootstrap, missing)
    topics.create(missing, 1)
    result = tick(instance, kafka_resource(topics, dlq_topic=missing), None)
    assert [r.partition_key for r in result.run_requests] == [a]
    assert [m.value for m in read_topic(topics.bootstrap, missing)] == [b"{broken"]


def test_unreachable_dead_letter_topic_raises_a_clear_error() -> None:
    dead_port = free_port()
    publisher = DeadLetterPublisher(
        KafkaConnection(bootstrap_servers=f"127.0.0.1:{dead_port}"), "refresh.dlq"
    )
    with pytest.raises(DeadLetterError, match=r"'refresh\.dlq'"):
        publisher.publish([rejected(b"{broken")])


# --- no event swallowed by a run key --------------------------------------------------------


def test_cleared_cursor_reads_again_under_run_keys_never_used(
    topics: Topics, instance: DagsterInstance
) -> None:
    a, b = account_ids(2)
    topics.publish([refresh_event(a), refresh_event(b)], partition=0)
    first = tick(instance, kafka_resource(topics), None)
    again = tick(instance, kafka_resource(topics), None)
    assert len(first.run_requests) == len(again.run_requests) == 2
    assert not run_keys(first) & run_keys(again)


def test_recreated_topic_never_reuses_run_keys_of_the_earlier_incarnation(
    topics: Topics, instance: DagsterInstance
) -> None:
    """Deleted and created again, the topic restarts at offset 0; with the cursor lost as well
    (the memory-only broker's restart does both), a generation counter would restart too."""
    a, b = account_ids(2)
    topics.publish([refresh_event(a)], partition=0)
    before = tick(instance, kafka_resource(topics), None)
    admin = AdminClient({"bootstrap.servers": topics.bootstrap})
    for future in admin.delete_topics([topics.refresh]).values():
        future.result(10)
    topics.create(topics.refresh, 3)
    topics.publish([refresh_event(b)], partition=0)
    with_old_cursor = tick(instance, kafka_resource(topics), before.cursor)
    with_no_cursor = tick(instance, kafka_resource(topics), None)
    for after in (with_old_cursor, with_no_cursor):
        assert [r.partition_key for r in after.run_requests] == [b]
        assert not run_keys(before) & run_keys(after)
    assert TopicCursor.model_validate_json(with_old_cursor.cursor).topic_id != (
        TopicCursor.model_validate_json(before.cursor).topic_id
    )


class OutOfRangeOnce:
    """The reader's consumer, but partition 0's first fetch reports ``OFFSET_OUT_OF_RANGE``,
    as Kafka does when a log was truncated under the cursor. The embedded broker never reports
    it (a fetch past the end waited silently, measured), so that one error is injected; the
    seek and the re-read that follow are real."""

    def __init__(self, real: Consumer) -> None:
        self.real, self.sent = real, False

    def consume(self, num_messages: int, timeout: float) -> list:
        if not self.sent:
            self.sent = True
            error = KafkaError(KafkaError.OFFSET_OUT_OF_RANGE)
            return [Message(topic="t", partition=0, offset=50, error=error)]
        return self.real.consume(num_messages=num_messages, timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_out_of_range_offsets_re_read_under_a_new_epoch(topics: Topics) -> None:
    ids = account_ids(3)
    topics.publish([refresh_event(i) for i in ids], partition=0)
    connection = KafkaConnection(bootstrap_servers=topics.bootstrap)
    limits = PollLimits(idle_seconds=1.0)
    fetch_wait = int(EMBEDDED_BROKER_FETCH_WAIT_MS)
    with TopicReader(connection, topics.refresh, GROUP_ID, fetch_wait) as reader:
        first = reader.poll(TopicCursor(topic=topics.refresh), limits)
    ahead = first.cursor.model_copy(update={"offsets": {0: 50}})
    with TopicReader(connection, topics.refresh, GROUP_ID, fetch_wait) as reader:
        reader._consumer = OutOfRangeOnce(reader._consumer)
        again = reader.poll(ahead, limits)
    assert [m.offset for m in again.messages] == [0, 1, 2]
    assert again.cursor.epoch != first.cursor.epoch
    assert any("out of range" in note for note in again.notes)
    earlier = {r.run_key for r in plan_tick(first.messages).runs}
    assert not earlier & {r.run_key for r in plan_tick(again.messages).runs}


# --- cutover from the old consumer -----------------------------------------------------------


def commit_as_old_consumer(bootstrap: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP_ID})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


@pytest.fixture
def cutover_topic(topics: Topics) -> list[str]:
    """Two events on partition 0 and six on partition 1, of which the old consumer group
    committed the first four of partition 1 and nothing of partition 0."""
    ids = account_ids(8)
    topics.publish([refresh_event(i) for i in ids[:2]], partition=0)
    topics.publish([refresh_event(i) for i in ids[2:]], partition=1)
    commit_as_old_consumer(topics.bootstrap, topics.refresh, {1: 4})
    return ids


def test_first_tick_starts_at_the_old_groups_committed_offsets_else_earliest(
    topics: Topics, instance: DagsterInstance, cutover_topic: list[str], capfd
) -> None:
    result = tick(instance, kafka_resource(topics), None)
    expected = cutover_topic[:2] + cutover_topic[6:]
    assert sorted(r.partition_key for r in result.run_requests) == sorted(expected)
    assert f"committed offsets of consumer group '{GROUP_ID}': {{1: 4}}" in capfd.readouterr().err


def test_start_from_earliest_ignores_the_groups_offsets(
    topics: Topics, instance: DagsterInstance, cutover_topic: list[str]
) -> None:
    result = tick(instance, kafka_resource(topics, start_from="earliest"), None)
    assert sorted(r.partition_key for r in result.run_requests) == sorted(cutover_topic)


def test_start_from_latest_reads_only_what_comes_next(
    topics: Topics, instance: DagsterInstance
) -> None:
    old, new = account_ids(4)[:3], account_ids(5)[4]
    produce(
        topics.bootstrap, topics.refresh, [{"value": refresh_event(i), "partition": 0} for i in old]
    )
    first = tick(instance, kafka_resource(topics, start_from="latest"), None)
    assert first.run_requests == []
    topics.publish([refresh_event(new)], partition=0)
    second = tick(instance, kafka_resource(topics, start_from="latest"), first.cursor)
    assert [r.partition_key for r in second.run_requests] == [new]


def test_invalid_start_from_fails_the_tick_with_the_allowed_values(
    topics: Topics, instance: DagsterInstance
) -> None:
    with pytest.raises(ValueError, match=r"one of committed \| earliest \| latest; got 'newest'"):
        tick(instance, kafka_resource(topics, start_from="newest"), None)


def test_commit_refused_while_the_old_consumer_is_a_member_is_logged_not_fatal(
    topics: Topics, instance: DagsterInstance, capfd
) -> None:
    """A live member of the group (the old consumer during cutover) makes the broker refuse
    our group-less commit (UNKNOWN_MEMBER_ID on the embedded broker, measured)."""
    a, b = account_ids(2)
    topics.publish([refresh_event(a)], partition=0)
    first = tick(instance, kafka_resource(topics), None)
    member = Consumer(
        {"bootstrap.servers": topics.bootstrap, "group.id": GROUP_ID, "session.timeout.ms": 6000}
    )
    assigned: list = []
    member.subscribe([topics.refresh], on_assign=lambda _c, parts: assigned.append(parts))
    try:
        deadline = time.monotonic() + 30
        while not assigned and time.monotonic() < deadline:
            member.poll(0.2)
        assert assigned, "the old consumer never joined the group"
        topics.publish([refresh_event(b)], partition=2)
        capfd.readouterr()
        second = tick(instance, kafka_resource(topics), first.cursor)
    finally:
        member.close()
    assert [r.partition_key for r in second.run_requests] == [b]
    assert f"lag offsets not committed to consumer group '{GROUP_ID}'" in capfd.readouterr().err
    assert committed_offsets(topics.bootstrap, topics.refresh, GROUP_ID, 3) == {}


def test_an_event_read_again_after_its_tick_is_never_folded_into_a_used_key(
    topics: Topics, instance: DagsterInstance
) -> None:
    """A tick evaluated again from the same cursor (its runs were stored, the cursor update
    was not) reads a newer event for the same account with the old one: the group's key is
    the newer event's, so Dagster's dedupe of the old key cannot swallow it."""
    (a,) = account_ids(1)
    topics.publish([refresh_event(a)], partition=0)
    start = tick(instance, kafka_resource(topics), None)
    cursor = TopicCursor.model_validate_json(start.cursor)
    replay_from = cursor.model_copy(update={"offsets": {0: 0}}).to_json()
    first = tick(instance, kafka_resource(topics), replay_from)
    topics.publish([refresh_event(a, scheduledAt="2026-11-29T10:00:00Z")], partition=0)
    again = tick(instance, kafka_resource(topics), replay_from)
    (used,) = run_keys(first)
    (request,) = again.run_requests
    assert request.run_key != used
    assert request.tags["ig-refresh/coalesced-events"] == "1"
    assert request.tags["ig-refresh/scheduled-at"].startswith("2026-11-29")
