"""The README's first command: the embedded stack, demo data, and Dagster processing it.

``dev`` keeps the webserver (:3000), the daemon and the health sidecar (:3053) running until
Ctrl-C. ``demo`` runs the daemon until every demo event has an outcome, prints a summary
table, and exits non-zero if any outcome differs from what the fixtures expect.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import redis
from bson import ObjectId
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from pydantic import BaseModel

from ig_refresh_dagster.devstack.seed import (
    DemoAccount,
    demo_accounts,
    demo_events,
    ensure_topics,
    publish,
    seed_accounts,
)
from ig_refresh_dagster.devstack.stack import (
    EMBEDDED_BROKER_FETCH_WAIT_MS,
    PROJECT_ROOT,
    EmbeddedStack,
    embedded_stack,
    venv_bin,
)
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.intake.topic_reader import PollLimits, TopicCursor, TopicReader
from ig_refresh_dagster.refresh.run.outcomes import InsightsOutcome
from ig_refresh_dagster.stores.mongo import open_client
from ig_refresh_dagster.stores.refresh_log import DEFERRED, as_utc

WORKSPACE = str(PROJECT_ROOT / "workspace.yaml")
JOB = "instagram_refresh_job"
UI_PORT = 3000
UNKNOWN = DemoAccount(username="(not in Mongo)", expected="not_found", before={})
EXPECTED_STATUS = {
    "graph": ("COMPLETED", "business_discovery"),
    "scrape_json": ("COMPLETED", "web_profile_json"),
    "scrape_html": ("COMPLETED", "profile_html"),
    "blocked": (DEFERRED, None),
    "gone": ("FAILED", None),
    "not_found": ("FAILED", None),
}


class Outcome(BaseModel):
    account: DemoAccount
    account_id: str
    status: str
    method: str | None = None
    followers_after: Any = None
    insights: str = "-"
    detail: str = ""

    @property
    def as_expected(self) -> bool:
        status, method = EXPECTED_STATUS[self.account.expected]
        insights_ok = self.account.auth is None or self.insights.startswith("stored")
        return self.status == status and (method is None or self.method == method) and insights_ok


def prepare(stack: EmbeddedStack) -> list[DemoAccount]:
    """Seed Mongo and the cache, create the topics, publish the demo events."""
    accounts = demo_accounts()
    client = open_client(stack.env["MONGODB_URI"])
    try:
        seed_accounts(
            client[stack.setting("MONGODB_DATABASE")],
            redis.Redis.from_url(stack.env["REDIS_URL"]),
            accounts,
        )
    finally:
        client.close()
    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    topic = stack.setting("INSTAGRAM_REFRESH_TOPIC")
    ensure_topics(bootstrap, {topic: 3, stack.setting("INSTAGRAM_REFRESH_DLQ_TOPIC"): 1})
    publish(bootstrap, topic, demo_events(accounts))
    return accounts


def start_dagster(stack: EmbeddedStack, webserver_port: int | None) -> None:
    """The daemon, and the webserver when a port is given."""
    # Create the SQLite storage once, here, before any Dagster process starts: the daemon, the
    # webserver and the demo's own reader opening a fresh home at the same moment race to create
    # the same tables ("table alembic_version already exists").
    DagsterInstance.from_config(str(stack.dagster_home)).dispose()
    stack.launch("dagster-daemon", [venv_bin("dagster-daemon"), "run", "-w", WORKSPACE])
    if webserver_port is not None:
        argv = [venv_bin("dagster-webserver"), "-w", WORKSPACE, "-h", "127.0.0.1"]
        stack.launch("dagster-webserver", [*argv, "-p", str(webserver_port)], port=webserver_port)


def _outcome(instance: Any, db: Any, account: DemoAccount, account_id: str) -> Outcome:
    runs = instance.get_runs(
        RunsFilter(job_name=JOB, tags={"dagster/partition": account_id}), limit=1
    )
    if not runs:
        return Outcome(account=account, account_id=account_id, status="PENDING")
    run = runs[0]
    doc = db["Account"].find_one({"_id": ObjectId(account_id)}) or {}
    data = doc.get("instagramData") or {}
    log = db["DataRefreshLog"].find_one({"runId": run.run_id}) or {}
    common = {"account": account, "account_id": account_id, "method": data.get("method")}
    common["followers_after"] = doc.get("followerCount")
    if run.status not in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE):
        return Outcome(**common, status="IN_PROGRESS")
    if log.get("status") == DEFERRED:
        retry_at = f"retry at {as_utc(log['retryAt']):%H:%M:%S} UTC"
        return Outcome(**common, status=DEFERRED, detail=f"{retry_at}: {log.get('reason', '')}")
    notes = log.get("notes", [])
    insights = InsightsOutcome.model_validate(log["insights"]) if log.get("insights") else None
    return Outcome(
        **common,
        status=log.get("status", run.status.value),
        detail=log.get("error") or "; ".join(notes[:1]),
        insights=insights.status.value if insights else "-",
    )


def _collect(instance: Any, db: Any, accounts: list[DemoAccount]) -> list[Outcome]:
    unknown_id = next(e.account_id for e in demo_events(accounts) if e.label == "unknown account")
    pairs = [(a, a.account_id) for a in accounts] + [(UNKNOWN, unknown_id)]
    return [_outcome(instance, db, account, account_id) for account, account_id in pairs]


def _dead_letters(stack: EmbeddedStack) -> list[str]:
    topic = stack.setting("INSTAGRAM_REFRESH_DLQ_TOPIC")
    with TopicReader(
        KafkaConnection(bootstrap_servers=stack.env["KAFKA_BOOTSTRAP_SERVERS"]),
        topic,
        "ig-refresh-demo",
        fetch_wait_max_ms=int(EMBEDDED_BROKER_FETCH_WAIT_MS),
    ) as reader:
        polled = reader.poll(TopicCursor(topic=topic), PollLimits(idle_seconds=1.0))
    return [dict(m.headers).get("dlq-reason", b"?").decode() for m in polled.messages]


def _table(outcomes: list[Outcome], dead: list[str]) -> str:
    header = (
        "account",
        "expected",
        "status",
        "method",
        "followers before → after",
        "insights",
        "detail",
    )
    rows = [header] + [
        (
            o.account.username,
            o.account.expected,
            o.status + ("" if o.as_expected else "  ✗ unexpected"),
            o.method or "-",
            f"{o.account.before.get('followerCount', '-')} → {o.followers_after or '-'}",
            o.insights,
            o.detail[:70],
        )
        for o in outcomes
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"\ndead-letter topic: {len(dead)} message(s): {', '.join(dead) or 'none'}")
    return "\n".join(lines)


def run_demo(data_dir: Path, timeout: float = 300.0) -> int:
    demo_dir = data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    with embedded_stack(demo_dir, demo_dir / "dagster_home") as stack:
        print(f"embedded services started: {', '.join(stack.started) or 'none'}", flush=True)
        accounts = prepare(stack)
        started = time.monotonic()
        start_dagster(stack, webserver_port=None)
        print("dagster-daemon running; waiting for every demo event to have an outcome…")
        instance = DagsterInstance.from_config(str(stack.dagster_home))
        client = open_client(stack.env["MONGODB_URI"])
        db = client[stack.setting("MONGODB_DATABASE")]
        try:
            while True:
                outcomes = _collect(instance, db, accounts)
                settled = all(o.status in ("COMPLETED", "FAILED", DEFERRED) for o in outcomes)
                if settled or time.monotonic() - started > timeout:
                    break
                time.sleep(2)
            elapsed = time.monotonic() - started
            dead = _dead_letters(stack)
            print(_table(outcomes, dead))
            print(f"\nall outcomes settled in {elapsed:.1f}s (daemon start included)")
        finally:
            client.close()
            instance.dispose()
    ok = all(o.as_expected for o in outcomes) and sorted(dead) == [
        "malformed_json",
        "unsupported_platform",
    ]
    print("demo: OK" if ok else "demo: FAILED (see ✗ rows above)")
    return 0 if ok else 1


def run_dev(data_dir: Path) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with embedded_stack(data_dir, data_dir / "dagster_home") as stack:
        prepare(stack)
        start_dagster(stack, webserver_port=UI_PORT)
        port = int(stack.setting("PORT"))
        stack.launch("health", [venv_bin("ig-refresh"), "health", "--port", str(port)], port=port)
        print(
            f"Dagster UI   http://127.0.0.1:{UI_PORT}  (runs appear within ~10 s)\n"
            f"health       http://127.0.0.1:{port}/health   /ready\n"
            f"services     {', '.join(stack.started)}; logs in {stack.logs}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        stop.wait()
        print("stopping…", flush=True)
    return 0
