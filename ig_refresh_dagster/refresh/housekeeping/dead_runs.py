"""The dead-run reaper: fails refresh runs whose worker process is gone.

Dagster's DefaultRunLauncher has no run-worker health check, so when the worker dies together
with the code server that launched it (the daemon's process group SIGKILLed, OOM, a host
restart), the run stays STARTED and keeps its account's concurrency slot until run monitoring's
``max_runtime_seconds`` ends it. This sensor checks the worker itself: Dagster records the
worker's pid in the run's "Started process for run (pid: N)" engine event; if no process has
that pid any more, or the pid now belongs to a process started after that event, the run is
reported failed. That frees the slot at once, lets Dagster's run retries re-run it (a crash
carries no step failure, so it is retried even with ``retry_on_asset_or_op_failure: false``),
and lets the log reconciler close its entry.

Sensors are evaluated in the code server, which the DefaultRunLauncher's workers are children
of, so the pid is looked up on the host that ran the worker. A run launched through a code
server on another host, or a platform without ``/proc``, is left to ``max_runtime_seconds``.

Adapter: ``DagsterInstance.report_run_failed`` (what run monitoring itself calls to fail a run)
and the launcher's ``.dagster/grpc_info`` tag are outside Dagster's documented API; this module
is the one place that uses them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from ig_refresh_dagster.refresh.run.job import instagram_refresh_job

WATCHED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
# Where the DefaultRunLauncher records the code server that launched a run (host/port/socket).
GRPC_INFO_TAG = ".dagster/grpc_info"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
STARTED_PROCESS = "Started process for run"
# /proc start times have clock-tick resolution and event timestamps come from another clock.
START_TOLERANCE_SECONDS = 2.0
PROC = Path("/proc")


def process_start_time(pid: int, proc: Path = PROC) -> float | None:
    """When process ``pid`` started (epoch seconds), or None if there is no such live process
    (a zombie counts as gone: it has exited and only waits to be reaped)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which sits in parentheses and may itself contain spaces.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    boot = next(
        float(line.split()[1])
        for line in (proc / "stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _launched_here(run: DagsterRun) -> bool:
    raw = run.tags.get(GRPC_INFO_TAG)
    if raw is None:
        return False
    try:
        info = json.loads(raw)
    except ValueError:
        return False
    return bool(info.get("socket")) or info.get("host") in LOCAL_HOSTS


def _worker(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run's latest worker and when it announced itself."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False
    ).records
    for record in records:
        entry = record.event_log_entry
        event = entry.get_dagster_event()
        if not (event.message or "").startswith(STARTED_PROCESS):
            continue
        pid = event.engine_event_data.metadata.get("pid") if event.engine_event_data else None
        if pid is not None and str(pid.value).isdigit():
            return int(pid.value), entry.timestamp
    return None


def gone_worker(instance: DagsterInstance, run: DagsterRun, proc: Path = PROC) -> str | None:
    """Why the run's worker is known to be gone, or None while it may be alive (or the run
    cannot be judged from here)."""
    if not (proc / "stat").exists() or not _launched_here(run):
        return None
    worker = _worker(instance, run.run_id)
    if worker is None:
        return None  # not started yet: run monitoring's start timeout covers it
    pid, announced = worker
    started = process_start_time(pid, proc)
    if started is None:
        return f"its worker process {pid} no longer exists"
    if started > announced + START_TOLERANCE_SECONDS:
        return f"its worker pid {pid} now belongs to a newer process"
    return None


@sensor(
    minimum_interval_seconds=15,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Fails refresh runs whose worker process died (SIGKILL, OOM, host restart) so their "
        "account slot frees, Dagster retries them and their DataRefreshLog is closed."
    ),
)
def refresh_dead_run_reaper(context: SensorEvaluationContext) -> SkipReason:
    instance = context.instance
    records = instance.get_run_records(
        RunsFilter(job_name=instagram_refresh_job.name, statuses=WATCHED), limit=500
    )
    failed = []
    for record in records:
        reason = gone_worker(instance, record.dagster_run)
        current = instance.get_run_by_id(record.dagster_run.run_id) if reason else None
        # Re-read: the run may have finished between the listing and the check.
        if reason and current is not None and current.status in WATCHED:
            message = f"Run worker died: {reason}. Marked failed by refresh_dead_run_reaper."
            instance.report_run_failed(current, message)
            context.log.warning(f"run {current.run_id}: {message}")
            failed.append(current.run_id)
    return SkipReason(
        f"{len(records)} refresh runs in flight; failed {len(failed)} with a dead worker"
        + (f": {', '.join(failed)}" if failed else "")
    )
