"""The Kafka sensor against the real embedded broker: ticks, cursor, DLQ, coalescing."""

from __future__ import annotations

import threading
import time

import pytest
from dagster import DagsterInstance

from ig_refresh_dagster.intake.topic_reader import TopicCursor
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.launch.intake_sensor import instagram_refresh_sensor
from ig_refresh_dagster.refresh.run.resources import GROUP_ID
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.kafka_helpers import (
    account_ids,
    committed_offsets,
    kafka_resource,
    read_topic,
    refresh_event,
    tick,
)


def test_backlog_drains_over_several_ticks_nothing_lost_nothing_twice(
    topics: Topics, instance: DagsterInstance
) -> None:
    ids = account_ids(1200)
    topics.publish([refresh_event(i) for i in ids])
    resource = kafka_resource(topics, max_messages_per_tick=500)
    cursor, sizes, run_keys, partitions = None, [], [], []
    for _ in range(6):
        result = tick(instance, resource, cursor)
        cursor = result.cursor
        sizes.append(len(result.run_requests))
        run_keys += [r.run_key for r in result.run_requests]
        partitions += [r.partition_key for r in result.run_requests]
        if not result.run_requests:
            assert result.skip_reason is not None
            break
    assert sizes[:3] == [500, 500, 200]
    assert len(run_keys) == len(set(run_keys)) == 1200
    assert sorted(partitions) == sorted(ids)
    assert set(instance.get_dynamic_partitions(instagram_accounts.name)) == set(ids)
    assert sum(TopicCursor.model_validate_json(cursor).offsets.values()) == 1200


def test_an_idle_tick_long_polls_and_requests_an_event_published_while_it_waits(
    topics: Topics, instance: DagsterInstance
) -> None:
    """The sensor loop starts a tick at most every 5 s; an idle tick that waits for the first
    event requests it at once instead. The event is published well after the old 2 s first-
    message wait, so only a tick still polling can request it."""
    (account,) = account_ids(1)
    resource = kafka_resource(topics, wait_for_events_seconds=60.0, max_poll_seconds=60.0)
    results: list[object] = []
    waiting = threading.Thread(target=lambda: results.append(tick(instance, resource, None)))
    waiting.start()
    time.sleep(4.0)
    topics.publish([refresh_event(account)])
    waiting.join(timeout=45.0)
    assert not waiting.is_alive(), "the tick kept waiting after the event arrived"
    (result,) = results
    assert [r.partition_key for r in result.run_requests] == [account]


def test_the_sensor_is_eligible_at_every_loop_of_the_daemon() -> None:
    """The daemon evaluates sensors every 5 s and a tick starts a little after its loop: with a
    minimum interval of 5, every other loop found 4.99 s elapsed and skipped the sensor."""
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

    assert instagram_refresh_sensor.minimum_interval_seconds < MIN_INTERVAL_LOOP_TIME


def test_cursor_resumes_after_a_tick_that_raised(topics: Topics, instance: DagsterInstance) -> None:
    """A dead-letter topic that is missing makes the tick raise; the daemon keeps the old
    cursor, so the next tick re-reads the same messages and nothing is lost."""
    ids = account_ids(3)
    topics.publish([refresh_event(ids[0]), b"not json", refresh_event(ids[1])])
    with pytest.raises(Exception, match="does not exist"):
        tick(instance, kafka_resource(topics, dlq_topic=f"{topics.dlq}-missing"), None)
    result = tick(instance, kafka_resource(topics), None)
    assert sorted(r.partition_key for r in result.run_requests) == sorted(ids[:2])
    assert len(read_topic(topics.bootstrap, topics.dlq)) == 1


def test_every_rejection_reason_goes_to_dlq_with_original_bytes_and_headers(
    topics: Topics, instance: DagsterInstance
) -> None:
    (good,) = account_ids(1)
    bad = {
        b"{oops": "malformed_json",
        b"[1,2,3]": "not_an_object",
        refresh_event('{"$ne": null}'): "invalid_fields",
        refresh_event(good, accountId={"$ne": None}): "invalid_fields",
        refresh_event(good, platform="TIKTOK"): "unsupported_platform",
        refresh_event(good, padding="x" * 5000): "oversized",
    }
    topics.publish(list(bad), partition=0, key=b"k1", headers=[("trace", b"abc")])
    topics.publish([refresh_event(good)], partition=0)
    result = tick(instance, kafka_resource(topics, max_message_bytes=4096), None)
    assert [r.partition_key for r in result.run_requests] == [good]
    dead = read_topic(topics.bootstrap, topics.dlq)
    assert [m.value for m in dead] == list(bad)
    for offset, message in enumerate(dead):
        headers = dict(message.headers)
        assert headers["dlq-reason"].decode() == bad[message.value]
        assert headers["dlq-source-topic"].decode() == topics.refresh
        assert headers["dlq-source-partition"] == b"0"
        assert headers["dlq-source-offset"] == str(offset).encode()
        assert headers["dlq-detail"]
        assert headers["trace"] == b"abc"
        assert message.key == b"k1"


def test_events_for_one_account_in_one_tick_coalesce_under_the_last_events_key(
    topics: Topics, instance: DagsterInstance
) -> None:
    a, b = account_ids(2)
    topics.publish([refresh_event(a), refresh_event(b), refresh_event(a), refresh_event(a)], 0)
    result = tick(instance, kafka_resource(topics), None)
    epoch = TopicCursor.model_validate_json(result.cursor).epoch
    requests = {r.partition_key: r for r in result.run_requests}
    assert set(requests) == {a, b}
    assert requests[a].run_key == f"{epoch}:0:3"
    assert requests[a].tags["ig-refresh/source-offset"] == f"{topics.refresh}:0:3"
    assert requests[a].tags["ig-refresh/coalesced-events"] == "2"
    assert "ig-refresh/coalesced-events" not in requests[b].tags


def test_each_account_is_requested_as_a_partition_once_per_tick(
    topics: Topics, instance: DagsterInstance
) -> None:
    a, b = account_ids(2)
    instance.add_dynamic_partitions(instagram_accounts.name, [a])
    topics.publish([refresh_event(a), refresh_event(b), refresh_event(a)])
    result = tick(instance, kafka_resource(topics), None)
    (request,) = result.dynamic_partitions_requests
    assert sorted(request.partition_keys) == [a, b]
    assert sorted(instance.get_dynamic_partitions(instagram_accounts.name)) == [a, b]


def test_group_offsets_follow_only_the_durable_cursor(
    topics: Topics, instance: DagsterInstance
) -> None:
    topics.publish([refresh_event(i) for i in account_ids(6)], partition=1)
    first = tick(instance, kafka_resource(topics), None)
    assert committed_offsets(topics.bootstrap, topics.refresh, GROUP_ID, 3) == {}
    tick(instance, kafka_resource(topics), first.cursor)
    assert committed_offsets(topics.bootstrap, topics.refresh, GROUP_ID, 3) == {1: 6}


def test_recreated_topic_is_re_read_under_new_run_keys(
    topics: Topics, instance: DagsterInstance
) -> None:
    (a,) = account_ids(1)
    topics.publish([refresh_event(a)], partition=2)
    stale = TopicCursor(
        topic=topics.refresh, topic_id="an-older-incarnation", offsets={2: 50}, epoch="0ld0ld0ld0ld"
    )
    result = tick(instance, kafka_resource(topics), stale.to_json())
    cursor = TopicCursor.model_validate_json(result.cursor)
    (request,) = result.run_requests
    assert cursor.epoch != stale.epoch
    assert request.run_key == f"{cursor.epoch}:2:0"
    assert cursor.topic_id not in (None, "an-older-incarnation")


def test_unreadable_cursor_starts_from_earliest(topics: Topics, instance: DagsterInstance) -> None:
    (a,) = account_ids(1)
    topics.publish([refresh_event(a)])
    result = tick(instance, kafka_resource(topics), "{not a cursor")
    assert [r.partition_key for r in result.run_requests] == [a]


def test_missing_topic_skips_with_reason(topics: Topics, instance: DagsterInstance) -> None:
    result = tick(instance, kafka_resource(topics, topic="never-created-topic"), None)
    assert result.run_requests == []
    assert "no new messages" in result.skip_reason.skip_message


def test_message_on_a_new_partition_is_read_while_another_is_caught_up(
    topics: Topics, instance: DagsterInstance
) -> None:
    """Regression: a fetch that includes a caught-up partition was held by the broker long
    enough for the tick to give up before the new partition's message arrived."""
    a, b = account_ids(2)
    topics.publish([refresh_event(a)], partition=0)
    first = tick(instance, kafka_resource(topics), None)
    for round_ in range(3):
        topics.publish([refresh_event(b)], partition=2)
        result = tick(instance, kafka_resource(topics), first.cursor)
        assert [r.partition_key for r in result.run_requests] == [b], f"round {round_}"


def test_a_tick_that_only_dead_lettered_says_so_in_its_skip_reason(
    topics: Topics, instance: DagsterInstance
) -> None:
    topics.publish([b"{oops", refresh_event("not-an-id")], partition=0)
    result = tick(instance, kafka_resource(topics), None)
    assert result.run_requests == []
    reason = result.skip_reason.skip_message
    assert "2 dead-lettered" in reason
    assert "malformed_json" in reason and "invalid_fields" in reason
    idle = tick(instance, kafka_resource(topics), result.cursor)
    assert "no new messages" in idle.skip_reason.skip_message, "an idle tick reads differently"
