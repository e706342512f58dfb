"""Building the refresh job against the test's real services, and Instagram response bodies."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from ig_refresh_dagster.definitions import defs
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.run.resources import (
    BudgetRedisResource,
    InstagramResource,
    KafkaResource,
    MongoResource,
    RedisResource,
)

TOKEN = "EAAG-super-secret-token-4242"
BUSINESS_ID = "17841400000000001"


def job_resources(
    mongo_uri: str,
    redis_url: str,
    graph_url: str,
    web_url: str,
    token: str | None = TOKEN,
    budget_redis_url: str | None = None,
    **instagram: Any,
) -> dict[str, Any]:
    redis_resource = RedisResource(url=redis_url)
    mongo_resource = MongoResource(uri=mongo_uri)
    return {
        "mongo": mongo_resource,
        "redis": redis_resource,
        "kafka": KafkaResource(),
        "instagram": InstagramResource(
            redis=redis_resource,
            budget_redis=BudgetRedisResource(url=budget_redis_url or redis_url),
            mongo=mongo_resource,
            graph_api_url=graph_url,
            web_url=web_url,
            access_token=token,
            business_account_id=BUSINESS_ID if token else None,
            timeout_seconds=3,
            **instagram,
        ),
    }


def real_defs(resources: dict[str, Any]) -> Definitions:
    """The code location's own ``defs`` (assets, jobs, sensors, executor) with the test's
    resources in place of the environment's, so a wiring mistake in definitions.py fails here."""
    return Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        sensors=defs.sensors,
        schedules=defs.schedules,
        executor=defs.executor,
        resources=resources,
    )


def run_refresh(
    account_id: str,
    resources: dict[str, Any],
    instance: DagsterInstance,
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    if not instance.has_dynamic_partition(instagram_accounts.name, account_id):
        instance.add_dynamic_partitions(instagram_accounts.name, [account_id])
    job = real_defs(resources).resolve_job_def("instagram_refresh_job")
    return job.execute_in_process(
        partition_key=account_id, instance=instance, raise_on_error=False, tags=tags
    )


def seed_account(db: Any, **fields: Any) -> str:
    oid = ObjectId()
    db["Account"].insert_one({"_id": oid, "platform": "INSTAGRAM", **fields})
    return str(oid)


def graph_body(username: str, followers: int = 1500) -> dict[str, Any]:
    return {
        "business_discovery": {
            "id": "17841400000000099",
            "ig_id": 12345,
            "username": username,
            "name": "Nat Geo",
            "biography": "Experience the world",
            "profile_picture_url": "https://cdn.example/natgeo.jpg",
            "followers_count": followers,
            "follows_count": 140,
            "media_count": 30000,
            "website": "https://natgeo.com",
            "media": {
                "data": [
                    {"id": "1", "like_count": 100, "comments_count": 5, "media_type": "IMAGE"},
                    {"id": "2", "like_count": 200, "comments_count": 15, "media_type": "VIDEO"},
                ]
            },
        },
        "id": BUSINESS_ID,
    }


def web_profile_body(username: str, followers: int = 777) -> dict[str, Any]:
    return {
        "data": {
            "user": {
                "id": "999",
                "username": username,
                "full_name": "Jane Doe",
                "biography": "hello",
                "edge_followed_by": {"count": followers},
                "edge_follow": {"count": 12},
                "edge_owner_to_timeline_media": {"count": 34},
                "is_verified": False,
                "is_business_account": False,
                "profile_pic_url_hd": "https://cdn.example/jane.jpg",
                "external_url": None,
            }
        },
        "status": "ok",
    }


def graph_error(code: int, subcode: int | None = None, message: str = "error") -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": {**error, "fbtrace_id": "AbCdEf"}}
