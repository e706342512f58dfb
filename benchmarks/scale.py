"""Scale benchmarks: the operator's pages at many accounts, and sustained refreshes per hour.

1. The asset page's partition-health GraphQL query (``PartitionHealthQuery``, as the UI sends
   it to ``dagster-webserver``) at 10k, the cap (``INSTAGRAM_MAX_ACCOUNT_PARTITIONS``) and 100k
   materialized partitions vs. 1k; each also right after one new partition (Dagster's
   partition-status cache is keyed on the whole key set, so a new key costs a rebuild); the
   cap sensor's plan over the same keys; and the page itself in Chromium until it shows the
   partition health.
2. The Runs page filtered to one account (``runsOrError`` on the ``dagster/partition`` tag) at
   100k runs vs. 1k.
3. One account's history page (what the sidecar's ``/accounts/<key>/history`` serves) at 300k
   accounts vs. 1k, by id and by handle.
4. Sustained refreshes per hour through the daemon on the embedded stack (Instagram stand-in,
   budgets raised so Instagram is not the limit), as a multiple of the default hourly budget.

Materializations and runs are written in bulk with Dagster's own row builders straight into its
SQLite tables (``bulk_materializations``, ``bulk_runs``): one ``store_event`` per row would take
longer than the whole benchmark. ``python -m benchmarks.scale`` runs this part alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import requests
from bson import ObjectId
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
)
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._serdes import serialize_value

from benchmarks.run import (
    REPEATS,
    event,
    median_seconds,
    seed_copies,
    use_dagsters_default_launcher,
)
from ig_refresh_dagster import settings
from ig_refresh_dagster.devstack.demo import WORKSPACE
from ig_refresh_dagster.devstack.seed import DemoEvent, demo_accounts, ensure_topics, publish
from ig_refresh_dagster.devstack.seed import seed_accounts as seed_demo_accounts
from ig_refresh_dagster.devstack.services import ServiceProcess, free_port
from ig_refresh_dagster.devstack.stack import PROJECT_ROOT, embedded_stack, venv_bin
from ig_refresh_dagster.health.history_page import load_history, render_page
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster.refresh.housekeeping.partition_cap import AccountPartitionCap, plan_cap
from ig_refresh_dagster.refresh.housekeeping.retention import PROFILE_ASSET
from ig_refresh_dagster.refresh.run.job import instagram_refresh_job
from ig_refresh_dagster.stores.accounts import AccountStore
from ig_refresh_dagster.stores.history import ProfileHistoryStore
from ig_refresh_dagster.stores.mongo import litemongo_uri, open_client
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore

CHROMIUM = shutil.which("chromium")
# As in the browser tests: the machine's network is closed, so no calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
CAP = int(settings.default("INSTAGRAM_MAX_ACCOUNT_PARTITIONS") or 0)
PARTITION_STEPS = sorted({1_000, 10_000, CAP, 100_000} - {0})
RUN_STEPS = (1_000, 100_000)
RUNS_PER_ACCOUNT = 10
ACCOUNT_STEPS = (1_000, 300_000)
HISTORY_DAYS = 90
BATCH = 5_000
# The default hourly budgets: Graph 200 + scrape 60 (settings.py).
DEFAULT_HOURLY = int(settings.default("INSTAGRAM_HOURLY_BUDGET") or 0) + int(
    settings.default("INSTAGRAM_SCRAPE_HOURLY_BUDGET") or 0
)
SUSTAINED_ACCOUNTS = 1_500
SUSTAINED_WINDOW = 240.0

PARTITION_HEALTH = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions materializingPartitions failedPartitions
        }
      }
    }
  }
}
"""
RUNS_FOR_ACCOUNT = """
query RunsRootQuery($limit: Int, $filter: RunsFilter!) {
  runsOrError(limit: $limit, filter: $filter) {
    ... on Runs {
      results {
        id runId status jobName creationTime startTime endTime updateTime
        tags { key value }
      }
    }
  }
}
"""


def account_key(i: int) -> str:
    return f"{i:024x}"


def graphql(port: int, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": variables},
        timeout=600,
    ).json()
    if "errors" in answer:
        raise RuntimeError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


def partition_health(port: int, expected: int) -> int:
    """Loads the asset page's partition health; returns how many partitions it shows as
    materialized."""
    node = graphql(port, PARTITION_HEALTH, {"assetKey": {"path": ["instagram_profile"]}})
    keys = node["assetNodeOrError"]["partitionKeysByDimension"][0]["partitionKeys"]
    if len(keys) != expected:
        raise RuntimeError(f"the asset page saw {len(keys)} partitions, expected {expected}")
    return len(node["assetNodeOrError"]["assetPartitionStatuses"]["materializedPartitions"])


def asset_page_in_chromium(port: int, materialized: int) -> tuple[float, float] | None:
    """Seconds from opening the asset's Partitions tab until it shows the partition health
    ("Materialized (N)"): the first visit of a fresh browser profile (Dagster's scripts not yet
    cached), and the median of later visits in the same profile, as an operator's browser opens
    it; None without Debian's Chromium."""
    if CHROMIUM is None:
        return None
    from playwright.sync_api import sync_playwright

    url = f"http://127.0.0.1:{port}/assets/instagram_profile?view=partitions"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            samples = []
            for _ in range(REPEATS + 1):
                page = context.new_page()
                started = time.perf_counter()
                page.goto(url)
                page.get_by_text(f"Materialized ({materialized})").wait_for(timeout=120_000)
                samples.append(time.perf_counter() - started)
                page.close()
            return samples[0], statistics.median(samples[1:])
        finally:
            browser.close()


def _materialization(key: str, at: float) -> EventLogEntry:
    dagster_event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=RUNLESS_JOB_NAME,
        event_specific_data=StepMaterializationData(
            AssetMaterialization(asset_key=PROFILE_ASSET, partition=key)
        ),
    )
    return EventLogEntry(
        error_info=None,
        level=logging.INFO,
        user_message="",
        run_id=RUNLESS_RUN_ID,
        timestamp=at,
        dagster_event=dagster_event,
        job_name=RUNLESS_JOB_NAME,
    )


def bulk_materializations(instance: DagsterInstance, keys: list[str]) -> None:
    """Adds ``keys`` as partitions, each with one materialization, in batches. The last one
    goes through ``report_runless_asset_event`` so the asset's own row is current."""
    storage = instance.event_log_storage
    now = time.time()
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]
        instance.add_dynamic_partitions(instagram_accounts.name, batch)
        rows = [storage._event_to_row(_materialization(k, now)) for k in batch[:-1]]
        if rows:
            with storage.index_transaction() as conn:
                conn.execute(SqlEventLogStorageTable.insert(), rows)
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key=PROFILE_ASSET, partition=batch[-1])
        )


def bulk_runs(instance: DagsterInstance, count: int, accounts: int, offset: int) -> None:
    """``count`` finished refresh runs spread over ``accounts`` accounts, oldest first."""
    storage = instance.run_storage
    start = datetime.now(UTC) - timedelta(days=30)
    for first in range(0, count, BATCH):
        runs, tags = [], []
        for i in range(first, min(count, first + BATCH)):
            key = account_key(1 + (offset + i) % accounts)
            run = DagsterRun(
                job_name=instagram_refresh_job.name,
                run_id=str(uuid.uuid4()),
                status=DagsterRunStatus.SUCCESS,
                tags={"dagster/partition": key, "ig-refresh/source": "event"},
            )
            runs.append(
                {
                    "run_id": run.run_id,
                    "pipeline_name": run.job_name,
                    "status": run.status.value,
                    "run_body": serialize_value(run),
                    "partition": key,
                    "create_timestamp": start + timedelta(seconds=offset + i),
                }
            )
            tags += [{"run_id": run.run_id, "key": k, "value": v} for k, v in run.tags.items()]
        with storage.connect() as conn:
            conn.execute(RunsTable.insert(), runs)
            conn.execute(RunTagsTable.insert(), tags)


def bench_pages(home: Path, logs: Path) -> list[tuple[str, float, float]]:
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    webserver = ServiceProcess(
        "dagster-webserver",
        [venv_bin("dagster-webserver"), "-w", WORKSPACE, "-h", "127.0.0.1", "-p", str(port)],
        port,
        logs / "dagster-webserver.log",
        env=env,
        cwd=PROJECT_ROOT,
        start_timeout=180,
    )
    instance = DagsterInstance.from_config(str(home))
    mongo = open_client(litemongo_uri(home / "mongo"))
    refresh_log = RefreshLogStore(mongo["bench"])
    rows: list[tuple[str, float, float]] = []
    try:
        accounts = 0  # materialized account partitions; plus one new key per step
        steady: dict[int, float] = {}
        shown_at: dict[int, tuple[float, float] | None] = {}
        for n, step in enumerate(PARTITION_STEPS):
            bulk_materializations(instance, [account_key(i) for i in range(accounts + 1, step + 1)])
            accounts, keys = step, step + n
            # The first load after the bulk builds the cache.
            shown = partition_health(port, keys)
            if shown != accounts:
                raise RuntimeError(f"the asset page shows {shown} of {accounts:,} materialized")
            steady[step] = median_seconds(lambda k=keys: partition_health(port, k))
            instance.add_dynamic_partitions(instagram_accounts.name, [f"new-{step}"])
            started = time.perf_counter()
            partition_health(port, keys + 1)
            first = time.perf_counter() - started
            plan = median_seconds(
                lambda k=keys: plan_cap(
                    instance,
                    refresh_log,
                    AccountPartitionCap(max_partitions=k * 9 // 10, keep_added_within_minutes=0),
                )
            )
            shown_at[step] = asset_page_in_chromium(port, accounts)
            base = steady[PARTITION_STEPS[0]]
            rows += [
                (f"asset page partition health, {step:,} partitions", steady[step], base),
                (f"  first load after one new partition ({step:,})", first, base),
                (f"  cap sensor plan over {step:,} keys (evicting 10 %)", plan, base),
            ]
            shown, first_shown = shown_at[step], shown_at[PARTITION_STEPS[0]]
            if shown is not None and first_shown is not None:
                rows += [
                    (f"  asset page in Chromium, {visit} ({step:,})", shown[i], first_shown[i])
                    for i, visit in enumerate(("first visit", "later visits"))
                ]
            print(f"partition health at {step:,}: {steady[step]:.2f}s", flush=True)

        done = 0
        for step in RUN_STEPS:
            bulk_runs(instance, step - done, step // RUNS_PER_ACCOUNT, done)
            done = step
            target = account_key(7)
            variables = {
                "limit": 25,
                "filter": {"tags": [{"key": "dagster/partition", "value": target}]},
            }
            found = graphql(port, RUNS_FOR_ACCOUNT, variables)["runsOrError"]["results"]
            if len(found) < RUNS_PER_ACCOUNT:
                raise RuntimeError(f"{len(found)} runs of {target}, expected {RUNS_PER_ACCOUNT}+")
            seconds = median_seconds(lambda v=variables: graphql(port, RUNS_FOR_ACCOUNT, v))
            rows.append((f"runs list of one account, {step:,} runs", seconds, 0.0))
            print(f"runs of one account at {step:,} runs: {seconds:.2f}s", flush=True)
        base = rows[-2][1]
        rows[-2:] = [(label, s, base) for label, s, _ in rows[-2:]]
    finally:
        mongo.close()
        instance.dispose()
        webserver.stop()
    return rows


def seed_history(db: Any, first: int, last: int, today: date) -> None:
    """Accounts ``first``..``last`` with one history day each; account 1 with 90 days."""
    for start in range(first, last + 1, BATCH):
        ids = range(start, min(last + 1, start + BATCH))
        db["Account"].insert_many(
            [
                {"_id": ObjectId(account_key(i)), "platform": "INSTAGRAM", "handle": f"user{i}"}
                for i in ids
            ]
        )
        db["InstagramProfileHistory"].insert_many(
            [
                {"accountId": ObjectId(account_key(i)), "day": today.isoformat(), "followers": i}
                for i in ids
            ]
        )
    if first == 1:
        db["InstagramProfileHistory"].insert_many(
            [
                {
                    "accountId": ObjectId(account_key(1)),
                    "day": (today - timedelta(days=d)).isoformat(),
                    "followers": 1000 + d,
                }
                for d in range(1, HISTORY_DAYS)
            ]
        )


def history_page(db: Any, key: str, today: date) -> int:
    found = load_history(db, key, HISTORY_DAYS, today)
    if found is None:
        raise RuntimeError(f"no account {key}")
    return len(render_page(*found, days=HISTORY_DAYS))


def bench_history(folder: Path) -> list[tuple[str, float, float]]:
    """One database per size, seeded before its indexes exist: the embedded store checks a
    unique index by scanning, so bulk inserts under one grow quadratically."""
    today = datetime.now(UTC).date()
    rows: list[tuple[str, float, float]] = []
    for step in ACCOUNT_STEPS:
        client = open_client(litemongo_uri(folder / f"history-{step}"))
        db = client["bench"]
        seed_history(db, 1, step, today)
        AccountStore(db).ensure_indexes()
        ProfileHistoryStore(db).ensure_indexes()
        history_page(db, "@user1", today)  # the first query builds the embedded indexes
        for label, key in (("by id", account_key(1)), ("by handle", "@user1")):
            seconds = median_seconds(lambda k=key, d=db: history_page(d, k, today))
            rows.append((f"history page {label}, {step:,} accounts", seconds, 0.0))
        client.close()
        print(f"history page at {step:,} accounts: {rows[-1][1]:.3f}s", flush=True)
    base_id, base_handle = rows[0][1], rows[1][1]
    return [(label, s, base_id if "by id" in label else base_handle) for label, s, _ in rows]


def refreshes_per_hour(
    instance: DagsterInstance, ids: list[str], window: float
) -> tuple[float, int]:
    """Successful refresh runs per hour from the first one to finish, over ``window``."""
    deadline = time.perf_counter() + window + 600
    while time.perf_counter() < deadline:
        records = instance.get_run_records(
            RunsFilter(statuses=[DagsterRunStatus.SUCCESS], tags={"dagster/partition": ids})
        )
        ends = sorted(r.end_time for r in records if r.end_time)
        if ends and (ends[-1] - ends[0] >= window or len(ends) == len(ids)):
            counted = [t for t in ends if t - ends[0] <= window]
            span = counted[-1] - counted[0]
            return (len(counted) - 1) / span * 3600 if span else 0.0, len(counted)
        time.sleep(2)
    raise RuntimeError("no sustained measurement: runs did not finish")


def bench_sustained(folder: Path, dagster_default_launcher: bool = False) -> tuple[float, int]:
    """Publishes one event for each of ``SUSTAINED_ACCOUNTS`` accounts and lets the daemon
    work through them at the budgets raised out of the way; with Dagster's DefaultRunLauncher
    (a spawned process per run) as the baseline, or the project's warm launcher."""
    with embedded_stack(folder, folder / "home") as stack:
        if dagster_default_launcher:
            use_dagsters_default_launcher(stack.dagster_home)
        stack.env.update(
            INSTAGRAM_HOURLY_BUDGET="1000000",
            INSTAGRAM_SCRAPE_HOURLY_BUDGET="1000000",
            INSTAGRAM_MIN_REFRESH_INTERVAL_HOURS="0",
        )
        account = next(a for a in demo_accounts() if a.expected == "graph")
        client = open_client(stack.env["MONGODB_URI"])
        db = client[stack.setting("MONGODB_DATABASE")]
        seed_demo_accounts(db, redis.Redis.from_url(stack.env["REDIS_URL"]), [account])
        topic = stack.setting("INSTAGRAM_REFRESH_TOPIC")
        bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
        ensure_topics(bootstrap, {topic: 3, stack.setting("INSTAGRAM_REFRESH_DLQ_TOPIC"): 1})
        ids = seed_copies(db, account, SUSTAINED_ACCOUNTS)
        publish(bootstrap, topic, [DemoEvent(label=i, value=event(i), account_id=i) for i in ids])
        stack.launch("dagster-daemon", [venv_bin("dagster-daemon"), "run", "-w", WORKSPACE])
        instance = DagsterInstance.from_config(str(stack.dagster_home))
        try:
            return refreshes_per_hour(instance, ids, SUSTAINED_WINDOW)
        finally:
            instance.dispose()
            client.close()


def print_rows(rows: list[tuple[str, float, float]]) -> None:
    print(f"{'measure':60} {'seconds':>8} {'x baseline':>11}")
    for label, seconds, base in rows:
        print(f"{label:60} {seconds:8.3f} {seconds / base if base else 0:11.1f}")


def timed(label: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = fn()
    print(f"[{label}: {time.perf_counter() - started:.0f}s]", flush=True)
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        home = folder / "pages-home"
        home.mkdir()
        (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
        (folder / "logs").mkdir()
        pages = timed("pages", lambda: bench_pages(home, folder / "logs"))
        history = timed("history", lambda: bench_history(folder))
        spawned = timed(
            "sustained, default launcher",
            lambda: bench_sustained(folder / "spawned", dagster_default_launcher=True),
        )
        warm = timed("sustained, warm launcher", lambda: bench_sustained(folder / "warm"))
    print_rows(pages + history)
    print(f"sustained refreshes through the daemon (default hourly budget {DEFAULT_HOURLY}/h):")
    for name, (per_hour, counted) in (
        ("Dagster's DefaultRunLauncher (baseline)", spawned),
        ("WarmRunLauncher", warm),
    ):
        print(
            f"  {name:40} {per_hour:7,.0f}/h over {counted} runs = "
            f"{per_hour / DEFAULT_HOURLY:4.1f} x the budget, {per_hour / spawned[0]:.2f} x baseline"
        )


if __name__ == "__main__":
    main()
