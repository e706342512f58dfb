"""Account, DataRefreshLog and the profile cache, against litemongo and a real valkey-server."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
import redis
from bson import ObjectId

from ig_refresh_dagster.instagram import InstagramProfile
from ig_refresh_dagster.stores.accounts import AccountNotFound, AccountStore
from ig_refresh_dagster.stores.cache import CacheOutcome, ProfileCache, cache_key
from ig_refresh_dagster.stores.mongo import open_client
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def seed(db, **fields) -> str:
    oid = ObjectId()
    db["Account"].insert_one({"_id": oid, "platform": "INSTAGRAM", **fields})
    return str(oid)


def test_load_prefers_handle_then_account_id_field(mongo_db) -> None:
    store = AccountStore(mongo_db)
    assert store.load(seed(mongo_db, handle="@natgeo", accountId="123")).username == "natgeo"
    assert store.load(seed(mongo_db, accountId="nasa")).username == "nasa"
    assert store.load(seed(mongo_db, handle="  ")).username is None


def test_load_missing_account_raises(mongo_db) -> None:
    with pytest.raises(AccountNotFound):
        AccountStore(mongo_db).load(str(ObjectId()))


def test_apply_refresh_sets_only_changed_fields_and_never_nulls(mongo_db) -> None:
    account_id = seed(
        mongo_db,
        handle="natgeo",
        name="Nat Geo",
        followerCount=100,
        description="old bio",
        instagramData={"followers": 100, "following": 5, "isVerified": True},
        custom="untouched",
    )
    update = AccountStore(mongo_db).apply_refresh(
        account_id,
        {
            "name": "Nat Geo",
            "followerCount": 150,
            "description": None,
            "instagramData": {"followers": 150, "following": None, "mediaCount": 9},
        },
        NOW,
    )
    doc = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})
    assert doc["followerCount"] == 150
    assert doc["description"] == "old bio"
    assert doc["instagramData"] == {
        "followers": 150,
        "following": 5,
        "isVerified": True,
        "mediaCount": 9,
    }
    assert doc["custom"] == "untouched"
    assert doc["lastDataRefresh"].replace(tzinfo=UTC) == NOW
    assert update.changed == ["followerCount", "instagramData"]
    assert update.before["followerCount"] == 100
    assert update.after["followerCount"] == 150


def test_apply_refresh_replaces_non_object_instagram_data(mongo_db) -> None:
    account_id = seed(mongo_db, handle="x", instagramData=None)
    AccountStore(mongo_db).apply_refresh(account_id, {"instagramData": {"followers": 1}}, NOW)
    assert mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["instagramData"] == {
        "followers": 1
    }


def test_apply_refresh_on_deleted_account_raises(mongo_db) -> None:
    with pytest.raises(AccountNotFound):
        AccountStore(mongo_db).apply_refresh(str(ObjectId()), {"followerCount": 1}, NOW)


def _scraped(**fields) -> InstagramProfile:
    return InstagramProfile(
        username="sam.outdoors",
        source="scrape",
        method="profile_html",
        fetched_at=NOW,
        **fields,
    )


def test_refresh_without_a_display_name_keeps_the_name(mongo_db) -> None:
    """A page that shows no display name says nothing about it: the account keeps its name
    instead of getting the username."""
    account_id = seed(
        mongo_db, handle="sam.outdoors", name="Sam R.", instagramData={"name": "Sam R."}
    )
    update = AccountStore(mongo_db).apply_refresh(
        account_id, _scraped(followers_count=2318).to_account_fields(), NOW
    )
    doc = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})
    assert doc["name"] == "Sam R."
    assert doc["instagramData"]["name"] == "Sam R."
    assert doc["instagramData"]["followers"] == 2318
    assert "name" not in update.changed


def test_successful_refresh_clears_the_gone_mark(mongo_db) -> None:
    account_id = seed(mongo_db, handle="sam.outdoors", instagramData={"followers": 2250})
    store = AccountStore(mongo_db)
    store.mark_gone(account_id, NOW)
    gone = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["instagramData"]
    assert gone["isGone"] is True

    update = store.apply_refresh(
        account_id, _scraped(followers_count=2250).to_account_fields(), NOW
    )

    data = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["instagramData"]
    assert "isGone" not in data and "goneAt" not in data
    assert data["followers"] == 2250
    assert "instagramData" in update.changed
    assert "isGone" in update.before["instagramData"]
    assert "isGone" not in update.after["instagramData"]


def test_refresh_log_is_one_entry_per_run_across_retries(mongo_db) -> None:
    log = RefreshLogStore(mongo_db)
    log.ensure_indexes()
    account_id = str(ObjectId())
    log.start("run-1", account_id, NOW)
    log.start("run-1", account_id, NOW)  # a retried first step
    log.complete("run-1", "graph", {"a": 1}, {"a": 2}, NOW, ["note"], account_id=account_id)
    entries = list(mongo_db["DataRefreshLog"].find({}))
    assert len(entries) == 1
    entry = entries[0]
    assert entry["status"] == "COMPLETED"
    assert entry["accountId"] == ObjectId(account_id)
    assert entry["platform"] == "INSTAGRAM"
    assert entry["source"] == "graph"
    assert entry["dataSnapshot"] == {"before": {"a": 1}, "after": {"a": 2}}


def test_refresh_log_failure_without_start_still_one_entry(mongo_db) -> None:
    log = RefreshLogStore(mongo_db)
    account_id = str(ObjectId())
    log.fail("run-2", account_id, "fetch profile: gone", NOW)
    log.fail("run-2", account_id, "fetch profile: gone", NOW)
    (entry,) = list(mongo_db["DataRefreshLog"].find({}))
    assert entry["status"] == "FAILED"
    assert entry["error"] == "fetch profile: gone"


def test_cache_merges_and_keeps_ttl(redis_client: redis.Redis) -> None:
    key = cache_key("123")
    redis_client.set(key, json.dumps({"account": {"name": "old", "keep": 1}, "other": [1]}), ex=900)
    outcome = ProfileCache(redis_client).refresh("123", {"name": "new", "followerCount": 5})
    assert outcome is CacheOutcome.UPDATED
    assert json.loads(redis_client.get(key)) == {
        "account": {"name": "new", "keep": 1, "followerCount": 5},
        "other": [1],
    }
    assert 890 < redis_client.ttl(key) <= 900


def test_cache_absent_key_is_not_created(redis_client: redis.Redis) -> None:
    assert ProfileCache(redis_client).refresh("404", {"name": "x"}) is CacheOutcome.ABSENT
    assert redis_client.exists(cache_key("404")) == 0


def test_cache_unreadable_entry_is_left_alone(redis_client: redis.Redis) -> None:
    redis_client.set(cache_key("1"), b"not json")
    assert ProfileCache(redis_client).refresh("1", {"name": "x"}) is CacheOutcome.UNREADABLE
    assert redis_client.get(cache_key("1")) == b"not json"


def test_cache_merge_survives_a_concurrent_writer(redis_url_for_test: str) -> None:
    """Writers racing on one entry: WATCH makes each re-read, so no field is lost."""
    client = redis.Redis.from_url(redis_url_for_test)
    client.set(cache_key("9"), json.dumps({"account": {}}), ex=600)

    def write(field: str) -> None:
        cache = ProfileCache(redis.Redis.from_url(redis_url_for_test))
        for i in range(25):
            cache.refresh("9", {f"{field}{i}": i})

    threads = [threading.Thread(target=write, args=(f,)) for f in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(json.loads(client.get(cache_key("9")))["account"]) == 75
    assert client.ttl(cache_key("9")) > 0


def test_open_client_rejects_unknown_and_relative_uris(tmp_path) -> None:
    with pytest.raises(ValueError, match="not supported"):
        open_client("postgres://x")
    with pytest.raises(ValueError, match="ABSOLUTE"):
        open_client("litemongo://relative/dir")


def test_stored_ids_are_never_replaced_and_a_proven_refresh_clears_the_recycled_flag(
    mongo_db,
) -> None:
    """The caller refuses answers naming another id; the store still never overwrites one,
    so no path can rewrite which Instagram user an Account is."""
    store = AccountStore(mongo_db)
    account_id = seed(mongo_db, handle="natgeo", instagramData={"igUserId": "111"})
    store.mark_recycled(account_id, {"igUserId": "111"}, {"igUserId": "222"}, NOW)
    assert store.count_recycled("INSTAGRAM") == 1
    assert store.load(account_id).user_ids == {"igUserId": "111"}
    store.apply_refresh(
        account_id, {"instagramData": {"igUserId": "222", "igGraphId": "178", "followers": 1}}, NOW
    )
    data = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["instagramData"]
    assert (data["igUserId"], data["igGraphId"], data["followers"]) == ("111", "178", 1)
    assert "handleRecycled" not in data and store.count_recycled("INSTAGRAM") == 0


def test_a_rounded_count_replaces_only_a_count_it_disagrees_with(mongo_db) -> None:
    store = AccountStore(mongo_db)
    account_id = seed(
        mongo_db,
        followerCount=12_487,
        instagramData={"followers": 12_487, "following": 900, "countsExact": {"followers": True}},
    )
    page = InstagramProfile(
        username="natgeo",
        source="scrape",
        method="profile_html",
        fetched_at=NOW,
        followers_count=12_500,
        follows_count=1_200,
        count_steps={"followers_count": 100, "follows_count": 100},
    )
    update = store.apply_refresh(account_id, page.to_account_fields(), NOW, page.rounded_counts())
    data = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["instagramData"]
    assert (data["followers"], data["following"]) == (12_487, 1_200)
    assert data["countsExact"] == {"followers": True, "following": False}
    assert update.after["followerCount"] == 12_487
