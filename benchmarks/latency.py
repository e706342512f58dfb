"""Publish → Account written at a steady trickle, through the real daemon, beside a hand-written
consumer (poll, one HTTP fetch, one update) reading the same broker in the same run.

Each event's latency is split by what Dagster records: the wait for a tick (publish → the start
of the tick that requested the run; zero when a tick was already polling), the tick and the
daemon creating the run (→ RUN_ENQUEUED), the queue (→ RUN_STARTING: the
coordinator dequeues and launches it), the launch (→ RUN_START: a new process imports Dagster
and loads ``defs``), and the run itself (→ the ``lastDataRefresh`` the upsert wrote).
The trickle runs twice, each on a fresh stack: with Dagster's ``DefaultRunLauncher`` (each run
a spawned interpreter; the baseline) and with the project's ``WarmRunLauncher``; the CPU every
process of the daemon's group spent per refresh is printed for both.
``make bench`` runs it; ``.venv/bin/python -m benchmarks.latency`` runs it alone (6 minutes).
``--sensor-loop-experiment`` adds a third trickle whose daemon has Dagster's 5 s sensor loop
patched to 1 s, to measure what that constant costs (never how the product runs).
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

from benchmarks.run import (
    event,
    graph_account_stack,
    seed_copies,
    use_dagsters_default_launcher,
)
from ig_refresh_dagster.devstack.demo import WORKSPACE
from ig_refresh_dagster.devstack.seed import (
    DemoEvent,
    ensure_topics,
    publish,
)
from ig_refresh_dagster.devstack.stack import EmbeddedStack, venv_bin
from ig_refresh_dagster.partitions import instagram_accounts
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


# Which part of the stack a process of the daemon's group is, by its command line; a run worker's
# CPU lands in its parent's (the forkserver's, or with Dagster's default launcher the code
# server's) once it is reaped.
ROLES = (
    ("multiprocessing.forkserver", "run workers (forkserver)"),
    ("multiprocessing.spawn", "run workers (spawned by the code server)"),
    ("dagster api grpc", "code server (+ its run workers)"),
    ("dagster-daemon", "daemon"),
    ("watch_orphans", "compute-log tails"),
    ("tail", "compute-log tails"),
)


def cpu_by_role(pgid: int) -> dict[str, float]:
    """CPU seconds of every live process in a process group, with the children they reaped,
    summed by role."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime stime cutime cstime follow at 11..14
            role = next((name for key, name in ROLES if key in command), "other")
            totals[role] = totals.get(role, 0.0) + sum(int(f) for f in fields[11:15]) / ticks
    return totals


def per_run(
    before: dict[str, float], after: dict[str, float], idle: dict[str, float], runs: int
) -> dict[str, float]:
    """CPU seconds per run by role, the idle rate's share of the window subtracted."""
    return {
        role: (after.get(role, 0.0) - before.get(role, 0.0) - idle.get(role, 0.0)) / runs
        for role in sorted(set(after) | set(before))
    }


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


# The in-process runs print no console log lines between the figures.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def refresh_cpu(stack: EmbeddedStack, account_id: str) -> tuple[float, float]:
    """CPU seconds of one refresh run in this process (median of 5), on the stack's SQLite
    instance and on an in-memory one: the difference is what the run's storage writes cost."""
    from ig_refresh_dagster.definitions import defs

    job = defs.resolve_job_def("instagram_refresh_job")
    medians = []
    for instance in (
        DagsterInstance.from_config(str(stack.dagster_home)),
        DagsterInstance.ephemeral(),
    ):
        instance.add_dynamic_partitions(instagram_accounts.name, [account_id])
        samples = []
        for _ in range(5):
            started = time.process_time()
            job.execute_in_process(partition_key=account_id, instance=instance, run_config=QUIET)
            samples.append(time.process_time() - started)
        medians.append(statistics.median(samples))
        instance.dispose()
    return medians[0], medians[1]


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


def daemon_argv(sensor_loop_seconds: int | None) -> list[str]:
    """``dagster-daemon run``; for the experiment, with the sensor daemon's loop period (the
    constant ``MIN_INTERVAL_LOOP_TIME``, 5 s) patched in that process only."""
    if sensor_loop_seconds is None:
        return [venv_bin("dagster-daemon"), "run", "-w", WORKSPACE]
    patch = (
        "import sys, dagster._daemon.sensor as loop; "
        f"loop.MIN_INTERVAL_LOOP_TIME = {sensor_loop_seconds}; "
        "sys.argv[0] = 'dagster-daemon'; "
        "from dagster._daemon.cli import main; main()"
    )
    return [sys.executable, "-c", patch, "run", "-w", WORKSPACE]


def bench_trickle(
    stack: EmbeddedStack, db: Any, account: Any, sensor_loop_seconds: int | None = None
) -> dict[str, Any]:
    ids = seed_copies(db, account, EVENTS)
    topic = stack.setting("INSTAGRAM_REFRESH_TOPIC")
    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    # The instance first: it creates the SQLite storage the daemon then opens (both at once race).
    instance = DagsterInstance.from_config(str(stack.dagster_home))
    daemon = stack.launch("dagster-daemon", daemon_argv(sensor_loop_seconds))
    # Warm-up: the daemon's first tick and first run (code server start) are not the trickle.
    warm = seed_copies(db, account, 1)[0]
    publish(bootstrap, topic, [DemoEvent(label=warm, value=event(warm))])
    while not db["Account"].find_one({"_id": ObjectId(warm), "lastDataRefresh": {"$ne": None}}):
        time.sleep(0.2)
    idle_started, idle_cpu = time.time(), cpu_by_role(daemon.pid)
    time.sleep(IDLE_SECONDS)
    idle_end = cpu_by_role(daemon.pid)
    idle_rate = {
        role: (idle_end.get(role, 0.0) - idle_cpu.get(role, 0.0)) / (time.time() - idle_started)
        for role in idle_end
    }
    published: dict[str, float] = {}
    trickle_started, trickle_cpu = time.time(), cpu_by_role(daemon.pid)
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
    idle_share = {role: rate * window for role, rate in idle_rate.items()}
    cpu_per_run = per_run(trickle_cpu, cpu_by_role(daemon.pid), idle_share, len(written))
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
    }


def print_trickle(name: str, trickle: dict[str, Any], baseline: list[float]) -> None:
    totals = trickle["totals"]
    print(f"  {name}, {len(totals)} events: {summary(totals)}")
    print(
        f"    x baseline: p50 {statistics.median(totals) / statistics.median(baseline):.0f}x; "
        f"{trickle['missing']} not written within 180 s"
    )
    for stage, values in trickle["stages"].items():
        print(f"    {stage:24} {summary(values)}")
    print("    CPU seconds per refresh, by process (idle use subtracted):")
    for role, seconds in trickle["cpu_per_run"].items():
        print(f"      {role:36} {seconds:6.3f}")
    cpu = sum(trickle["cpu_per_run"].values())
    print(
        f"      {'total':36} {cpu:6.3f}  -> CPU-bound ceiling on {os.cpu_count()} cores: "
        f"{os.cpu_count() * 3600 / cpu:,.0f} refreshes/h"
    )


def main() -> None:
    with graph_account_stack() as (stack, db, account):
        baseline = hand_written_consumer(stack, db, account.username)
        use_dagsters_default_launcher(stack.dagster_home)
        spawned = bench_trickle(stack, db, account)
    with graph_account_stack() as (stack, db, account):
        warm = bench_trickle(stack, db, account)
        on_sqlite, in_memory = refresh_cpu(stack, seed_copies(db, account, 1)[0])
    worker = run_worker_cpu()
    load = os.getloadavg()[0]
    print(f"publish → Account written, one event every {GAP_SECONDS:.0f} s (load {load:.1f}):")
    print(f"  hand-written consumer (baseline), {len(baseline)} events: {summary(baseline)}")
    print_trickle("Dagster's DefaultRunLauncher (a spawned process per run)", spawned, baseline)
    print_trickle("WarmRunLauncher (forked from a preloaded forkserver)", warm, baseline)
    if "--sensor-loop-experiment" in sys.argv:
        with graph_account_stack() as (stack, db, account):
            patched = bench_trickle(stack, db, account, sensor_loop_seconds=1)
        print_trickle("experiment: warm, Dagster's sensor loop patched to 1 s", patched, baseline)
    print("  goal: p50 <= 3 s, p95 <= 5 s")
    print("a spawned run process before its refresh starts, CPU seconds (median of 5):")
    for label, seconds in worker:
        print(f"    {label:38} {seconds:6.3f}")
    print(f"    {'total':38} {sum(s for _, s in worker):6.3f}")
    print("one refresh run in process, CPU seconds (median of 5):")
    print(f"    {'on SQLite storage':38} {on_sqlite:6.3f}")
    print(f"    {'on an in-memory instance':38} {in_memory:6.3f}")
    print(f"    {'-> storage writes':38} {on_sqlite - in_memory:6.3f}")


if __name__ == "__main__":
    main()
