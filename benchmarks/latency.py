"""Publish → Account written at a steady trickle, through the real daemon, beside a hand-written
consumer (poll, one HTTP fetch, one update) reading the same broker in the same run.

Each event's latency is split by what Dagster records: the wait for a tick (publish → the start
of the tick that requested the run; zero when a tick was already polling), the tick and the
daemon creating the run (→ RUN_ENQUEUED), the queue (→ RUN_STARTING: the
coordinator dequeues and launches it), the launch (→ RUN_START: a new process imports Dagster
and loads ``defs``), and the run itself (→ the ``lastDataRefresh`` the upsert wrote).
``make bench`` runs it; ``.venv/bin/python -m benchmarks.latency`` runs it alone (3 minutes).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import requests
from bson import ObjectId
from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from dagster import DagsterEventType, DagsterInstance, RunsFilter

from benchmarks.run import event, graph_account_stack, seed_copies
from ig_refresh_dagster.devstack.demo import WORKSPACE
from ig_refresh_dagster.devstack.seed import (
    DemoEvent,
    ensure_topics,
    publish,
)
from ig_refresh_dagster.devstack.stack import EmbeddedStack, venv_bin
from ig_refresh_dagster.stores.mongo import open_client

EVENTS = 24
GAP_SECONDS = 3.0
IDLE_SECONDS = 20.0
STAGES = ("wait for a tick", "tick, run created", "queue", "launch", "run")
_MARKS = (
    DagsterEventType.RUN_ENQUEUED,
    DagsterEventType.RUN_STARTING,
    DagsterEventType.RUN_START,
)


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of every live process in a process group, with the children they reaped (a
    run worker's CPU lands in its code server's cutime once it is joined)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime stime cutime cstime follow at 11..14
            total += sum(int(f) for f in fields[11:15])
    return total / ticks


def child_cpu_seconds(code: str, repeats: int = 5) -> float:
    """Median CPU seconds (user + system) of ``python -c code`` in a new process."""
    samples = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(samples)


def run_worker_cpu() -> list[tuple[str, float]]:
    """What a new run process spends before its refresh starts, each step on top of the last:
    the interpreter, ``import dagster``, the SQLite storage a run writes through, and ``defs``."""
    steps = [
        ("process start", "pass"),
        ("import dagster", "import dagster"),
        (
            "instance storage (SQLAlchemy, SQLite)",
            "import dagster, dagster._core.storage.runs.sqlite, "
            "dagster._core.storage.event_log.sqlite",
        ),
        (
            "load defs (this project)",
            "import dagster, dagster._core.storage.runs.sqlite, "
            "dagster._core.storage.event_log.sqlite; "
            "from ig_refresh_dagster import defs; defs.get_repository_def()",
        ),
    ]
    rows, previous = [], 0.0
    for label, code in steps:
        total = child_cpu_seconds(code)
        rows.append((label, total - previous))
        previous = total
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values):6.3f}  p95 {percentile(values, 0.95):6.3f}  "
        f"max {max(values):6.3f}"
    )


def hand_written_consumer(stack: EmbeddedStack, db: Any, handle: str) -> list[float]:
    """The old consumer's shape: poll, one Graph call, one update; publish → update seconds."""
    topic = "bench-hand-written"
    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    ensure_topics(bootstrap, {topic: 1})
    ids = [str(ObjectId()) for _ in range(EVENTS)]
    db["Account"].insert_many([{"_id": ObjectId(i), "handle": handle} for i in ids])
    latencies: list[float] = []
    published: dict[str, float] = {}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-hand-written"})
    consumer.list_topics(topic, timeout=5)
    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
    stop = threading.Event()
    graph = stack.env["INSTAGRAM_GRAPH_API_URL"]
    fields = f"business_discovery.username({handle}){{followers_count}}"
    headers = {"Authorization": f"Bearer {stack.env['INSTAGRAM_ACCESS_TOKEN']}"}

    def consume() -> None:
        # litemongo's handles belong to the thread that opened them.
        accounts = open_client(stack.env["MONGODB_URI"])[db.name]["Account"]
        while not stop.is_set():
            for msg in consumer.consume(10, 0.05):
                if msg.error():
                    continue
                account_id = msg.value().decode().split('"accountId": "')[1][:24]
                answer = requests.get(
                    f"{graph}/{stack.env['INSTAGRAM_BUSINESS_ACCOUNT_ID']}",
                    params={"fields": fields},
                    headers=headers,
                    timeout=10,
                ).json()
                followers = answer["business_discovery"]["followers_count"]
                accounts.update_one(
                    {"_id": ObjectId(account_id)}, {"$set": {"followers": followers}}
                )
                latencies.append(time.time() - published[account_id])

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    time.sleep(1.0)  # the assignment settles before the first event
    for account_id in ids:
        published[account_id] = time.time()
        publish(bootstrap, topic, [DemoEvent(label=account_id, value=event(account_id))])
        time.sleep(0.5)
    deadline = time.time() + 30
    while len(latencies) < len(ids) and time.time() < deadline:
        time.sleep(0.1)
    stop.set()
    worker.join()
    consumer.close()
    return latencies


def sensor_ticks(instance: DagsterInstance) -> list[Any]:
    state = next(s for s in instance.all_instigator_state() if s.name == "instagram_refresh_sensor")
    return instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1000)


def run_marks(
    instance: DagsterInstance, account_id: str, ticks: list[Any]
) -> tuple[float, dict[DagsterEventType, float]]:
    """When the tick that requested the account's run started, and when the run was enqueued,
    launched and started."""
    run = instance.get_runs(RunsFilter(tags={"dagster/partition": account_id}))[0]
    tick_start = next(t.timestamp for t in ticks if run.run_id in t.run_ids)
    return tick_start, {
        entry.dagster_event_type: entry.timestamp
        for entry in instance.all_logs(run.run_id, of_type=set(_MARKS))
    }


def bench_trickle(stack: EmbeddedStack, db: Any, account: Any) -> dict[str, Any]:
    ids = seed_copies(db, account, EVENTS)
    topic = stack.setting("INSTAGRAM_REFRESH_TOPIC")
    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    # The instance first: it creates the SQLite storage the daemon then opens (both at once race).
    instance = DagsterInstance.from_config(str(stack.dagster_home))
    daemon = stack.launch("dagster-daemon", [venv_bin("dagster-daemon"), "run", "-w", WORKSPACE])
    # Warm-up: the daemon's first tick and first run (code server start) are not the trickle.
    warm = seed_copies(db, account, 1)[0]
    publish(bootstrap, topic, [DemoEvent(label=warm, value=event(warm))])
    while not db["Account"].find_one({"_id": ObjectId(warm), "lastDataRefresh": {"$ne": None}}):
        time.sleep(0.2)
    idle_started, idle_cpu = time.time(), group_cpu_seconds(daemon.pid)
    time.sleep(IDLE_SECONDS)
    idle_rate = (group_cpu_seconds(daemon.pid) - idle_cpu) / (time.time() - idle_started)
    published: dict[str, float] = {}
    trickle_started, trickle_cpu = time.time(), group_cpu_seconds(daemon.pid)
    for account_id in ids:
        published[account_id] = time.time()
        publish(bootstrap, topic, [DemoEvent(label=account_id, value=event(account_id))])
        time.sleep(GAP_SECONDS)
    deadline = time.time() + 180
    written: dict[str, float] = {}
    while len(written) < len(ids) and time.time() < deadline:
        for doc in db["Account"].find(
            {"_id": {"$in": [ObjectId(i) for i in ids]}, "lastDataRefresh": {"$ne": None}}
        ):
            written[str(doc["_id"])] = doc["lastDataRefresh"].replace(tzinfo=UTC).timestamp()
        time.sleep(0.5)
    ticks = sensor_ticks(instance)
    # Once every account is written, its run has ended within a second or two.
    time.sleep(3.0)
    window = time.time() - trickle_started
    cpu_per_run = (group_cpu_seconds(daemon.pid) - trickle_cpu - idle_rate * window) / len(written)
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    totals = []
    for account_id in ids:
        if account_id not in written:
            continue
        tick_start, marks = run_marks(instance, account_id, ticks)
        points = [
            published[account_id],
            max(published[account_id], tick_start),
            marks[DagsterEventType.RUN_ENQUEUED],
            marks[DagsterEventType.RUN_STARTING],
            marks[DagsterEventType.RUN_START],
            written[account_id],
        ]
        for name, start, end in zip(STAGES, points, points[1:], strict=False):
            stages[name].append(end - start)
        totals.append(written[account_id] - published[account_id])
    instance.dispose()
    return {
        "totals": totals,
        "stages": stages,
        "missing": len(ids) - len(totals),
        "cpu_per_run": cpu_per_run,
        "idle_cpu_rate": idle_rate,
    }


def main() -> None:
    with graph_account_stack() as (stack, db, account):
        baseline = hand_written_consumer(stack, db, account.username)
        trickle = bench_trickle(stack, db, account)
    worker = run_worker_cpu()
    load = os.getloadavg()[0]
    totals = trickle["totals"]
    print(f"publish → Account written, one event every {GAP_SECONDS:.0f} s (load {load:.1f}):")
    print(f"  hand-written consumer (baseline), {len(baseline)} events: {summary(baseline)}")
    print(f"  Dagster pipeline, {len(totals)} events:                {summary(totals)}")
    print(
        f"  x baseline: p50 {statistics.median(totals) / statistics.median(baseline):.0f}x; "
        f"goal p50 <= 3 s, p95 <= 5 s; {trickle['missing']} not written within 180 s"
    )
    for name, values in trickle["stages"].items():
        print(f"    {name:24} {summary(values)}")
    print("a run process before its refresh starts, CPU seconds (median of 5):")
    for label, seconds in worker:
        print(f"    {label:38} {seconds:6.3f}")
    print(f"    {'total':38} {sum(s for _, s in worker):6.3f}")
    cpu = trickle["cpu_per_run"]
    print(
        f"CPU per refresh, daemon + code server + run worker, idle use subtracted: {cpu:.2f} s "
        f"(idle {trickle['idle_cpu_rate']:.2f} CPU-s/s); CPU-bound ceiling on "
        f"{os.cpu_count()} cores: {os.cpu_count() * 3600 / cpu:,.0f} refreshes/h"
    )


if __name__ == "__main__":
    main()
