"""Demo data: Account documents, cache entries and refresh events for the fixture profiles."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import redis
from bson import ObjectId
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import BaseModel, TypeAdapter

from ig_refresh_dagster.stores.cache import cache_key

FIXTURES = Path(__file__).parent / "fixtures"
CACHE_TTL_SECONDS = 3600


class DemoAccount(BaseModel):
    username: str
    expected: Literal["graph", "scrape_json", "scrape_html", "blocked", "gone", "not_found"]
    before: dict[str, Any]
    # The owner's authorisation (demo token), copied into Account.instagramAuth.
    auth: dict[str, str] | None = None

    @property
    def account_id(self) -> str:
        """Stable per username, so re-seeding updates the same documents."""
        return hashlib.sha256(self.username.encode()).hexdigest()[:24]

    @property
    def cache_id(self) -> str:
        return f"ig-{self.username}"


class DemoEvent(BaseModel):
    label: str
    value: bytes
    account_id: str | None = None


def demo_accounts() -> list[DemoAccount]:
    raw = (FIXTURES / "accounts.json").read_text()
    return TypeAdapter(list[DemoAccount]).validate_json(raw)


def seed_accounts(db: Any, cache: redis.Redis, accounts: list[DemoAccount]) -> None:
    """Every account gets its "before" values back; Graph accounts also get a cache entry, so
    the demo shows the cache being refreshed (and the others show it not being created)."""
    now = datetime.now(UTC)
    for account in accounts:
        db["Account"].update_one(
            {"_id": ObjectId(account.account_id)},
            {
                "$set": {
                    "platform": "INSTAGRAM",
                    "handle": account.username,
                    "accountId": account.cache_id,
                    **account.before,
                    **({"instagramAuth": account.auth} if account.auth else {}),
                },
                "$setOnInsert": {"createdAt": now},
                "$unset": {"instagramData": "", "lastDataRefresh": ""},
            },
            upsert=True,
        )
        key = cache_key(account.cache_id)
        cache.delete(key)
        if account.expected == "graph":
            entry = {"account": {"handle": account.username, **account.before}}
            cache.set(key, json.dumps(entry), ex=CACHE_TTL_SECONDS)


def demo_events(accounts: list[DemoAccount]) -> list[DemoEvent]:
    """One event per account, a duplicate (coalesced), an unknown account, and bad input."""
    now = datetime.now(UTC).isoformat()

    def event(account_id: str, platform: str = "INSTAGRAM") -> bytes:
        return json.dumps(
            {"accountId": account_id, "platform": platform, "scheduledAt": now}
        ).encode()

    events = [
        DemoEvent(label=a.username, value=event(a.account_id), account_id=a.account_id)
        for a in accounts
    ]
    missing = hashlib.sha256(b"no-such-account").hexdigest()[:24]
    first = accounts[0]
    return [
        *events,
        DemoEvent(
            label=f"{first.username} (duplicate)",
            value=event(first.account_id),
            account_id=first.account_id,
        ),
        DemoEvent(label="unknown account", value=event(missing), account_id=missing),
        DemoEvent(label="malformed JSON", value=b'{"accountId": "oops"'),
        DemoEvent(label="TikTok event", value=event(first.account_id, "TIKTOK")),
    ]


def ensure_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create missing topics (name → partitions); existing ones are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
    for future in admin.create_topics(wanted).values() if wanted else []:
        try:
            future.result(10)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def publish(bootstrap: str, topic: str, events: list[DemoEvent]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for event in events:
        key = event.account_id.encode() if event.account_id else None
        producer.produce(topic, key=key, value=event.value)
    if producer.flush(20):
        raise KafkaException(f"could not publish demo events to {topic}")
