"""The code location: one asset, one job, one sensor, and the resources they share."""

from __future__ import annotations

from dagster import Definitions

from ig_refresh_dagster.refresh import instagram_profile, instagram_refresh_job
from ig_refresh_dagster.resources import (
    InstagramResource,
    KafkaResource,
    MongoResource,
    RedisResource,
)
from ig_refresh_dagster.sensors import (
    instagram_refresh_sensor,
    refresh_canceled_log_sensor,
    refresh_failure_log_sensor,
)
from ig_refresh_dagster.settings import env_int_or_default, env_or_default


def build_resources() -> dict[str, object]:
    redis_resource = RedisResource(url=env_or_default("REDIS_URL"))
    return {
        "mongo": MongoResource(
            uri=env_or_default("MONGODB_URI"), database=env_or_default("MONGODB_DATABASE")
        ),
        "redis": redis_resource,
        "kafka": KafkaResource(
            bootstrap_servers=env_or_default("KAFKA_BOOTSTRAP_SERVERS"),
            topic=env_or_default("INSTAGRAM_REFRESH_TOPIC"),
            dlq_topic=env_or_default("INSTAGRAM_REFRESH_DLQ_TOPIC"),
        ),
        "instagram": InstagramResource(
            redis=redis_resource,
            graph_api_url=env_or_default("INSTAGRAM_GRAPH_API_URL"),
            web_url=env_or_default("INSTAGRAM_WEB_URL"),
            access_token=env_or_default("INSTAGRAM_ACCESS_TOKEN"),
            business_account_id=env_or_default("INSTAGRAM_BUSINESS_ACCOUNT_ID"),
            hourly_budget=env_int_or_default("INSTAGRAM_HOURLY_BUDGET"),
            scrape_hourly_budget=env_int_or_default("INSTAGRAM_SCRAPE_HOURLY_BUDGET"),
        ),
    }


defs = Definitions(
    assets=[instagram_profile],
    jobs=[instagram_refresh_job],
    sensors=[instagram_refresh_sensor, refresh_failure_log_sensor, refresh_canceled_log_sensor],
    resources=build_resources(),
)
