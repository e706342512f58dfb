"""The broker side: the memory-only broker restarting while the sensor reads (every topic and
offset gone, then recreated), and the dead-letter topic missing. The sensor says so, keeps
going, and no event behind the fault is lost."""

from __future__ import annotations

import pytest

from ig_refresh_dagster_tests.faults.conftest import FaultStack, wait_until
from ig_refresh_dagster_tests.support.kafka_helpers import read_topic

pytestmark = pytest.mark.slow


def test_broker_restart_during_ticks_is_reported_and_later_events_are_refreshed(
    stack: FaultStack,
) -> None:
    before = stack.seed(2)
    stack.publish(before)
    wait_until(
        lambda: {r.tags.get("dagster/partition") for r in stack.runs()} >= set(before),
        120,
        "runs for the events published before the restart",
    )
    # Down longer than the sensor's interval, so at least one tick meets no broker at all.
    stack.restart_broker(down_seconds=7)
    stack.topics.create(stack.topics.refresh, 3)
    stack.create_dlq()
    after = stack.seed(2)
    stack.publish(after)
    stack.wait_settled(before + after, timeout=150)
    assert "was recreated" in stack.daemon_log()


def test_missing_dead_letter_topic_loses_no_event(stack: FaultStack) -> None:
    """Depends on the intake sensor failing its tick loudly while the dead-letter topic is
    missing (branch ``intake``): the hostile events must reach the topic once it exists."""
    stack.delete_dlq()
    mentions = stack.daemon_log().count("dead-letter")
    hostile = [b"{broken", b'{"accountId": "not-an-object-id", "platform": "INSTAGRAM"}']
    accounts = stack.seed(2)
    stack.publish(accounts, extra=hostile)
    wait_until(
        lambda: stack.daemon_log().count("dead-letter") > mentions,
        60,
        "the sensor reading the events (and, with the topic missing, failing its tick)",
    )
    stack.create_dlq()
    stack.wait_settled(accounts, timeout=150)
    dead = wait_until(
        lambda: [
            m for m in read_topic(stack.topics.bootstrap, stack.topics.dlq) if m.value in hostile
        ],
        60,
        "hostile events in the dead-letter topic",
    )
    assert {m.value for m in dead} == set(hostile)
