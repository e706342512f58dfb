from __future__ import annotations

import logging

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ig_refresh_dagster.stores.fetch_memory import FetchMemory


def test_graph_disabled_per_token_fingerprint(redis_client: redis.Redis) -> None:
    memory = FetchMemory(redis_client)
    assert memory.graph_disabled_reason("aaaa") is None
    memory.disable_graph("aaaa", "graph_auth_190: token expired")
    assert memory.graph_disabled_reason("aaaa") == "graph_auth_190: token expired"
    assert memory.graph_disabled_reason("bbbb") is None


def test_not_business_expires(redis_client: redis.Redis) -> None:
    memory = FetchMemory(redis_client, prefix="t")
    assert not memory.is_not_business("sam.outdoors")
    memory.remember_not_business("Sam.Outdoors", ttl_seconds=3600)
    assert memory.is_not_business("sam.outdoors")
    ttl = redis_client.ttl("t:not-business:sam.outdoors")
    assert 0 < ttl <= 3600


def test_unreachable_redis_reads_nothing_and_drops_writes(
    unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    dead = redis.Redis(port=unused_port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    memory = FetchMemory(dead)
    with caplog.at_level(logging.WARNING):
        memory.disable_graph("aaaa", "x")
        memory.remember_not_business("sam", 60)
        assert memory.graph_disabled_reason("aaaa") is None
        assert memory.is_not_business("sam") is False
    assert len(caplog.records) == 4
