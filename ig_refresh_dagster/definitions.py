"""The code location: wiring only. Assets, jobs, sensors, and resources configured from the
settings table, each set variable passed as an ``EnvVar`` so the UI never shows its value."""

from __future__ import annotations

from dagster import (
    ConfigurableResource,
    Definitions,
    EnvVar,
    ResourceDefinition,
    in_process_executor,
)

from ig_refresh_dagster import settings
from ig_refresh_dagster.intake.connection import CONNECTION_SETTINGS
from ig_refresh_dagster.refresh.housekeeping.dead_runs import refresh_dead_run_reaper
from ig_refresh_dagster.refresh.housekeeping.partition_cap import (
    AccountPartitionCap,
    account_partition_cap_sensor,
)
from ig_refresh_dagster.refresh.housekeeping.retention import (
    storage_retention_job,
    storage_retention_schedule,
)
from ig_refresh_dagster.refresh.housekeeping.run_status import refresh_log_reconciler
from ig_refresh_dagster.refresh.launch.backfill import backfill_by_query
from ig_refresh_dagster.refresh.launch.backfill_summary import backfill_summary_sensor
from ig_refresh_dagster.refresh.launch.deferral_sensor import deferred_refresh_sensor
from ig_refresh_dagster.refresh.launch.freshness import instagram_freshness_sensor
from ig_refresh_dagster.refresh.launch.intake_sensor import instagram_refresh_sensor
from ig_refresh_dagster.refresh.run.job import instagram_profile, instagram_refresh_job
from ig_refresh_dagster.refresh.run.resources import (
    BudgetRedisResource,
    InstagramResource,
    KafkaResource,
    MongoResource,
    RedisResource,
)


def env(name: str) -> EnvVar | str | None:
    """The variable that supplies ``name`` (itself, or the setting it falls back to) as an
    EnvVar, so a fallback to a secret shows that variable's name, never its value."""
    supplier = settings.source(name)
    if settings.is_set(supplier):
        return EnvVar(supplier)
    return settings.value(name)


def env_int(name: str) -> EnvVar | int | None:
    supplier = settings.source(name)
    if settings.is_set(supplier):
        return EnvVar.int(supplier)
    fallback = settings.default(supplier)
    return None if fallback is None else int(fallback)


def build_resources() -> dict[str, object]:
    redis_resource = RedisResource(url=env("REDIS_URL"))
    mongo_resource = MongoResource(uri=env("MONGODB_URI"), database=env("MONGODB_DATABASE"))
    return {
        "mongo": mongo_resource,
        "redis": redis_resource,
        "kafka": KafkaResource(
            **{field: env(name) for field, name in CONNECTION_SETTINGS.items()},
            topic=env("INSTAGRAM_REFRESH_TOPIC"),
            dlq_topic=env("INSTAGRAM_REFRESH_DLQ_TOPIC"),
            start_from=env("INSTAGRAM_REFRESH_START_FROM"),
            fetch_wait_max_ms=env_int("KAFKA_FETCH_WAIT_MAX_MS"),
        ),
        "instagram": InstagramResource(
            redis=redis_resource,
            budget_redis=BudgetRedisResource(url=env("INSTAGRAM_BUDGET_REDIS_URL")),
            mongo=mongo_resource,
            graph_api_url=env("INSTAGRAM_GRAPH_API_URL"),
            web_url=env("INSTAGRAM_WEB_URL"),
            access_token=env("INSTAGRAM_ACCESS_TOKEN"),
            business_account_id=env("INSTAGRAM_BUSINESS_ACCOUNT_ID"),
            graph_credentials=env("INSTAGRAM_GRAPH_CREDENTIALS"),
            hourly_budget=env_int("INSTAGRAM_HOURLY_BUDGET"),
            scrape_hourly_budget=env_int("INSTAGRAM_SCRAPE_HOURLY_BUDGET"),
            backfill_budget_percent=env_int("INSTAGRAM_BACKFILL_BUDGET_PERCENT"),
            freshness_days=env_int("INSTAGRAM_FRESHNESS_DAYS"),
            min_refresh_interval_hours=env_int("INSTAGRAM_MIN_REFRESH_INTERVAL_HOURS"),
        ),
        "partition_cap": AccountPartitionCap(
            max_partitions=env_int("INSTAGRAM_MAX_ACCOUNT_PARTITIONS")
        ),
    }


def sealed(resource: ConfigurableResource) -> ResourceDefinition:
    """The resource with its bound values (EnvVars stay EnvVars, resolved in each run) and no
    run config: a launchpad scaffolds every config field that has a default, and a value bound
    here is one, so without this the analysts' ``backfill_by_query`` launchpad opens on ~30
    lines of budgets, URLs and timeouts. Their place is the environment, not a run's config."""
    definition = resource.get_resource_definition()
    return definition.configured(definition.config_schema.default_value)


def location_resources() -> dict[str, object]:
    """``build_resources()`` as the code location binds them: what ``backfill_by_query`` and
    the refresh job use is sealed."""
    resources = build_resources()
    return {
        key: sealed(value) if key in SEALED and isinstance(value, ConfigurableResource) else value
        for key, value in resources.items()
    }


# The resources the launchpad of ``backfill_by_query`` would otherwise scaffold. ``kafka`` and
# ``redis`` keep their config on the UI's resource pages.
SEALED = ("mongo", "instagram")

defs = Definitions(
    assets=[instagram_profile],
    jobs=[instagram_refresh_job, backfill_by_query, storage_retention_job],
    schedules=[storage_retention_schedule],
    sensors=[
        instagram_refresh_sensor,
        deferred_refresh_sensor,
        instagram_freshness_sensor,
        refresh_dead_run_reaper,
        refresh_log_reconciler,
        account_partition_cap_sensor,
        backfill_summary_sensor,
    ],
    resources=location_resources(),
    # Materialize, re-execute and backfills launched in the UI run the implicit asset job:
    # in process, like the refresh job, instead of one process per step.
    executor=in_process_executor,
)
