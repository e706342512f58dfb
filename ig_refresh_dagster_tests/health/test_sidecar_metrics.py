"""``GET /metrics`` and the follower-history page, served by the real sidecar over HTTP against
the suite's real parts (valkey, litemongo, the Tansu broker, a Dagster instance holding the
refresh sensor's cursor), parsed with prometheus-client's own parser."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from bson import ObjectId
from confluent_kafka import Producer
from dagster import DagsterInstance
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from prometheus_client.parser import text_string_to_metric_families

from ig_refresh_dagster.devstack.services import free_port
from ig_refresh_dagster.health.config import REFRESH_SENSOR, HealthConfig
from ig_refresh_dagster.health.server import HealthServer
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.cursor import TopicCursor
from ig_refresh_dagster.intake.dlq_headers import REASON
from ig_refresh_dagster.stores.accounts import AccountStore
from ig_refresh_dagster.stores.budget import (
    GRAPH_BUDGET,
    SCRAPE_BUDGET,
    HourlyBudget,
    graph_budget_name,
)
from ig_refresh_dagster.stores.fetch_memory import FetchMemory
from ig_refresh_dagster.stores.history import ProfileHistoryStore
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.sidecar_http import request as get

TOKEN = "EAAGmetrics-secret-token-0123456789"
GRAPH = graph_budget_name(token_fingerprint(TOKEN))  # the credential's own budget
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def naive_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def parse(body: bytes) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def scrape(server: HealthServer) -> tuple[Samples, str]:
    status, headers, raw = get(server, "/metrics")
    assert status == 200, raw
    assert headers["Content-Type"].startswith("text/plain; version=")
    return parse(raw), raw.decode()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def store_sensor_cursor(
    instance: DagsterInstance, cursor: str, location: str = "ig-refresh"
) -> None:
    """What the daemon stores after a good tick: the sensor's state with its cursor."""
    origin = RemoteInstigatorOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location),
            repository_name="__repository__",
        ),
        instigator_name=REFRESH_SENSOR,
    )
    data = SensorInstigatorData(
        cursor=cursor, last_tick_start_timestamp=time.time(), sensor_type=None
    )
    instance.add_instigator_state(
        InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING, data)
    )


def produce(bootstrap: str, topic: str, count: int, partition: int = 0, **kwargs: Any) -> None:
    """One flush per message: the embedded broker's high watermark is the start of the last
    batch + 1, so single-message batches keep it exact."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for _ in range(count):
        producer.produce(topic, value=b"{}", partition=partition, **kwargs)
        assert producer.flush(10) == 0


def seed_mongo(db: Any, now: datetime) -> None:
    logs = db["DataRefreshLog"]
    recent, old = now - timedelta(hours=1), now - timedelta(days=3)
    for status, source, at, extra in [
        ("COMPLETED", "graph", recent, {}),
        ("COMPLETED", "graph", recent, {}),
        ("COMPLETED", "scrape", recent, {}),
        ("FAILED", None, recent, {}),
        ("DEFERRED", None, recent, {}),
        ("DEFERRED", None, recent, {"retriedBy": "run-9"}),
        ("COMPLETED", "graph", old, {}),  # outside the 24 h window
    ]:
        entry = {"runId": str(ObjectId()), "status": status, "completedAt": at, **extra}
        logs.insert_one(entry | ({"source": source} if source else {}))
    accounts = db["Account"]
    for age in (timedelta(hours=2), timedelta(days=3), timedelta(days=10), timedelta(days=40)):
        accounts.insert_one({"platform": "INSTAGRAM", "lastDataRefresh": now - age})
    accounts.insert_one({"platform": "INSTAGRAM", "lastDataRefresh": now - timedelta(days=100)})
    accounts.insert_one({"platform": "INSTAGRAM"})  # never refreshed
    accounts.insert_one({"platform": "INSTAGRAM", "lastDataRefresh": None})  # never either
    # Gone, marked as the fetch step marks it (an old refresh, so it would count): not counted.
    gone = accounts.insert_one({"platform": "INSTAGRAM", "lastDataRefresh": now - timedelta(50)})
    AccountStore(db).mark_gone(str(gone.inserted_id), now)
    accounts.insert_one({"platform": "YOUTUBE", "lastDataRefresh": now})  # other platform


@pytest.fixture
def stack(
    topics: Topics,
    mongo_uri: str,
    mongo_db: Any,
    redis_url_for_test: str,
    redis_client: redis.Redis,
    instance: DagsterInstance,
) -> dict[str, Any]:
    """Every source configured and seeded; the values the tests expect follow from this."""
    seed_mongo(mongo_db, naive_now())
    graph = HourlyBudget(redis_client, GRAPH, 200)
    for _ in range(3):
        assert graph.try_acquire() == 0
    scrape_budget = HourlyBudget(redis_client, SCRAPE_BUDGET, 60)
    assert scrape_budget.try_acquire() == 0
    scrape_budget.block_for(120, "Instagram said 429")
    FetchMemory(redis_client).disable_graph(token_fingerprint(TOKEN), "token expired (190)")
    produce(topics.bootstrap, topics.refresh, 10, partition=0)
    produce(topics.bootstrap, topics.refresh, 4, partition=1)
    store_sensor_cursor(instance, TopicCursor(topic=topics.refresh, offsets={0: 6}).to_json())
    for reason, count in (("invalid_json", 2), ("unknown_account", 1)):
        produce(topics.bootstrap, topics.dlq, count, headers=[(REASON, reason.encode())])
    produce(topics.bootstrap, topics.dlq, 1)  # no reason header at all
    return {
        "host": "127.0.0.1",
        "port": 0,
        "kafka": KafkaConnection(bootstrap_servers=topics.bootstrap),
        "refresh_topic": topics.refresh,
        "dlq_topic": topics.dlq,
        "mongodb_uri": mongo_uri,
        "redis_url": redis_url_for_test,
        "dagster_home": instance.root_directory,
        "instagram_access_token": TOKEN,
        "instagram_business_account_id": "17841400000000001",
        "budget_limits": {GRAPH_BUDGET: 200, SCRAPE_BUDGET: 60},
    }


def test_metrics_match_the_seeded_stores_broker_and_sensor_cursor(stack: dict[str, Any]) -> None:
    with HealthServer(HealthConfig(**stack)) as server:
        samples, text = scrape(server)
    for source in (
        "refresh_outcomes",
        "deferred_refreshes",
        "accounts",
        "budgets",
        "graph",
        "consumer_lag",
        "dead_letters",
    ):
        assert value(samples, "ig_refresh_metrics_source_up", source=source) == 1, source
    outcomes = "ig_refresh_refreshes_last_24h"
    assert value(samples, outcomes, status="COMPLETED", source="graph") == 2
    assert value(samples, outcomes, status="COMPLETED", source="scrape") == 1
    assert value(samples, outcomes, status="FAILED", source="none") == 1
    assert value(samples, outcomes, status="DEFERRED", source="none") == 2
    assert value(samples, outcomes, status="SKIPPED", source="none") == 0
    assert value(samples, "ig_refresh_deferred_refreshes") == 1
    by_staleness = {
        label: value(samples, "ig_refresh_accounts", staleness=label)
        for label in ("<1d", "1-7d", "7-30d", ">30d", "never")
    }
    assert by_staleness == {"<1d": 1, "1-7d": 1, "7-30d": 1, ">30d": 2, "never": 2}
    assert value(samples, "ig_refresh_accounts_fresh_ratio") == pytest.approx(2 / 7)
    assert value(samples, "ig_refresh_freshness_target_seconds") == 7 * 86400
    oldest = value(samples, "ig_refresh_oldest_refresh_age_seconds")
    assert 100 * 86400 <= oldest < 100 * 86400 + 600
    assert value(samples, "ig_refresh_budget_used", budget=GRAPH) == 3
    assert value(samples, "ig_refresh_budget_used", budget="scrape") == 1
    assert value(samples, "ig_refresh_budget_limit", budget=GRAPH) == 200
    assert value(samples, "ig_refresh_budget_limit", budget="scrape") == 60
    assert 0 < value(samples, "ig_refresh_budget_blocked_seconds", budget="scrape") <= 120
    assert value(samples, "ig_refresh_budget_blocked_seconds", budget=GRAPH) == 0
    assert value(samples, "ig_refresh_graph_enabled") == 0
    fingerprint = token_fingerprint(TOKEN)
    assert value(samples, "ig_refresh_graph_credential_enabled", credential=fingerprint) == 0
    topic = stack["refresh_topic"]
    lag = {
        p: value(samples, "ig_refresh_consumer_lag", topic=topic, partition=str(p))
        for p in range(3)
    }
    assert lag == {0: 4, 1: 4, 2: 0}, "cursor at 6 of 10; partition 1 unread (4); 2 empty"
    dead = {
        reason: value(samples, "ig_refresh_dead_letters_total", reason=reason)
        for reason in ("invalid_json", "unknown_account", "unknown")
    }
    assert dead == {"invalid_json": 2, "unknown_account": 1, "unknown": 1}
    assert TOKEN not in text


def test_the_freshness_target_moves_the_fresh_share(stack: dict[str, Any]) -> None:
    with HealthServer(HealthConfig(**stack, freshness_days=14)) as server:
        samples, _ = scrape(server)
    assert value(samples, "ig_refresh_accounts_fresh_ratio") == pytest.approx(3 / 7)
    assert value(samples, "ig_refresh_accounts", staleness="7-30d") == 1


def test_dead_letters_are_read_incrementally_not_recounted(stack: dict[str, Any]) -> None:
    with HealthServer(HealthConfig(**stack, metrics_cache_seconds=0.2)) as server:
        first, _ = scrape(server)
        produce(stack["kafka"].bootstrap_servers, stack["dlq_topic"], 2, headers=[(REASON, b"x")])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.3)
            later, _ = scrape(server)
            if ("ig_refresh_dead_letters_total", (("reason", "x"),)) in later:
                break
    assert value(later, "ig_refresh_dead_letters_total", reason="x") == 2
    assert value(later, "ig_refresh_dead_letters_total", reason="invalid_json") == value(
        first, "ig_refresh_dead_letters_total", reason="invalid_json"
    )


def flood(server: HealthServer, scrapes: int) -> list[Samples]:
    start = threading.Barrier(scrapes)
    answers: list[Samples] = []

    def one() -> None:
        start.wait(60)
        answers.append(scrape(server)[0])

    threads = [threading.Thread(target=one) for _ in range(scrapes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def test_a_scrape_flood_is_served_from_one_cached_snapshot(
    stack: dict[str, Any], redis_client: redis.Redis, mongo_db: Any
) -> None:
    """Counted at valkey itself: the budget scripts (EVALSHA) and the Graph switch (PTTL) run
    once per snapshot; the snapshot's values are the cached ones even after the stores change."""
    with HealthServer(HealthConfig(**stack)) as server:
        warm, _ = scrape(server)
        before = redis_client.info("commandstats")
        connections = redis_client.info("stats")["total_connections_received"]
        mongo_db["DataRefreshLog"].insert_one(
            {
                "runId": "late",
                "status": "FAILED",
                "completedAt": datetime.now(UTC).replace(tzinfo=None),
            }
        )
        answers = flood(server, 100)
        after = redis_client.info("commandstats")
    assert len(answers) == 100
    for name in ("cmdstat_evalsha", "cmdstat_pttl"):
        assert after[name]["calls"] == before[name]["calls"], name
    assert redis_client.info("stats")["total_connections_received"] == connections
    failed = ("ig_refresh_refreshes_last_24h", (("source", "none"), ("status", "FAILED")))
    assert {answer[failed] for answer in answers} == {warm[failed]} == {1}
    ages = [answer[("ig_refresh_metrics_snapshot_age_seconds", ())] for answer in answers]
    assert min(ages) >= warm[("ig_refresh_metrics_snapshot_age_seconds", ())]


def test_a_source_that_is_down_reports_up_0_and_the_rest_is_served(
    stack: dict[str, Any],
) -> None:
    password = "s3cret-redis-pass"
    stack["redis_url"] = f"redis://:{password}@127.0.0.1:{free_port()}/0"
    with HealthServer(HealthConfig(**stack)) as server:
        samples, text = scrape(server)
    for source in ("budgets", "graph"):
        assert value(samples, "ig_refresh_metrics_source_up", source=source) == 0
    assert value(samples, "ig_refresh_metrics_source_up", source="accounts") == 1
    assert value(samples, "ig_refresh_deferred_refreshes") == 1
    assert ("ig_refresh_budget_used", (("budget", GRAPH),)) not in samples
    assert password not in text and TOKEN not in text


def test_without_a_dagster_home_lag_is_down_and_dead_letters_still_counted(
    stack: dict[str, Any],
) -> None:
    stack["dagster_home"] = None
    with HealthServer(HealthConfig(**stack)) as server:
        samples, _ = scrape(server)
    assert value(samples, "ig_refresh_metrics_source_up", source="consumer_lag") == 0
    assert value(samples, "ig_refresh_dead_letters_total", reason="invalid_json") == 2


# --- the follower-history page ------------------------------------------------------------------


def test_history_page_is_served_as_html_by_handle_with_days_bounded(
    mongo_uri: str, mongo_db: Any
) -> None:
    oid = ObjectId()
    mongo_db["Account"].insert_one({"_id": oid, "platform": "INSTAGRAM", "handle": "acme.studio"})
    history = ProfileHistoryStore(mongo_db)
    today = datetime.now(UTC)
    for back, followers in ((2, 100), (1, 120), (0, 150)):
        history.record(str(oid), today - timedelta(days=back), followers, 5, 9)
    cfg = HealthConfig(host="127.0.0.1", port=0, mongodb_uri=mongo_uri)
    with HealthServer(cfg) as server:
        status, headers, raw = get(server, "/accounts/%40acme.studio/history?days=30")
        by_id = get(server, f"/accounts/{oid}/history")
        clamped = get(server, "/accounts/acme.studio/history?days=99999")
        missing = get(server, "/accounts/nobody/history")
        bad = get(server, "/accounts/acme.studio/history?days=ten")
        head = get(server, "/accounts/acme.studio/history", method="HEAD")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    html = raw.decode()
    assert "@acme.studio" in html and html.count("<circle") == 3 and "last 30 days" in html
    assert by_id[0] == 200 and "last 90 days" in by_id[2].decode()
    assert clamped[0] == 200 and "last 730 days" in clamped[2].decode()
    assert missing[0] == 404 and missing[1]["Content-Type"] == "text/html; charset=utf-8"
    assert "No account" in missing[2].decode()
    assert bad[0] == 400
    assert head[0] == 200 and head[2] == b"" and int(head[1]["Content-Length"]) > 0


def test_history_page_without_a_store_is_503() -> None:
    with HealthServer(HealthConfig(host="127.0.0.1", port=0, mongodb_uri=None)) as server:
        status, headers, _ = get(server, "/accounts/acme/history")
    assert status == 503 and headers["Content-Type"] == "text/html; charset=utf-8"


def test_recycled_handles_are_counted_from_the_stores_flag(mongo_uri: str, mongo_db: Any) -> None:
    """Seeded through ``AccountStore.mark_recycled``, the field the refresh writes."""
    store = AccountStore(mongo_db)
    ids = [ObjectId() for _ in range(3)]
    for oid, platform in zip(ids, ("INSTAGRAM", "INSTAGRAM", "YOUTUBE"), strict=True):
        mongo_db["Account"].insert_one({"_id": oid, "platform": platform, "handle": "h"})
    now = datetime.now(UTC)
    for oid in (ids[0], ids[2]):
        store.mark_recycled(str(oid), {"igUserId": "1"}, {"igUserId": "2"}, now)
    cfg = HealthConfig(host="127.0.0.1", port=0, mongodb_uri=mongo_uri)
    with HealthServer(cfg) as server:
        samples, _ = scrape(server)
    assert value(samples, "ig_refresh_metrics_source_up", source="handle_recycled") == 1
    assert value(samples, "ig_refresh_handle_recycled_accounts") == 1
