"""The dead-run reaper: fails refresh runs whose worker process is gone.

Dagster's DefaultRunLauncher has no run-worker health check, so when the worker dies together
with the code server that launched it (the daemon's process group SIGKILLed, OOM, a host
restart), the run stays STARTED and keeps its account's concurrency slot until run monitoring's
``max_runtime_seconds`` ends it. This sensor checks the worker itself: Dagster records the
worker's pid in the run's "Started process for run (pid: N)" engine event, and the worker tags
its run with its pid and start time in clock ticks after boot when it starts; if no process has
that pid any more, or the pid now belongs to a process with another start time, the run is
reported failed. Start ticks are counted from boot, so a wall-clock step (NTP, a VM resume)
cannot make a live worker look like a newer process. That frees the slot at once, lets
Dagster's run retries re-run it (a crash carries no step failure, so it is retried even with
``retry_on_asset_or_op_failure: false``), and lets the log reconciler close its entry. Refresh
runs are told apart by asset and partition, so runs of UI Materialize and backfills
(``__ASSET_JOB``) are watched too.

Sensors are evaluated in the code server, which runs on the host of the workers it starts, and
of the workers the warm launcher forks for the daemon that started that code server
(``refresh/run/warm_launcher.py``), so the pid is looked up on the host that ran the worker. A
run launched through a code server on another host, or a platform without ``/proc``, is left to
``max_runtime_seconds``.

Adapter: ``DagsterInstance.report_run_failed`` (what run monitoring itself calls to fail a run),
the run storage's ``handle_run_event`` and the launcher's ``.dagster/grpc_info`` tag are outside
Dagster's documented API; this module is the one place that uses them.
"""

from __future__ import annotations

import json
from pathlib import Path

from dagster import (
    DagsterEvent,
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

from ig_refresh_dagster.refresh.run.refresh_runs import refresh_runs
from ig_refresh_dagster.refresh.run.warm_launcher import LAUNCHER_NAME, LAUNCHER_TAG
from ig_refresh_dagster.refresh.run.worker import PROC, process_start_ticks, tagged_worker

WATCHED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
# Where the DefaultRunLauncher records the code server that launched a run (host/port/socket).
GRPC_INFO_TAG = ".dagster/grpc_info"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
STARTED_PROCESS = "Started process for run"


def _launched_here(run: DagsterRun) -> bool:
    if run.tags.get(LAUNCHER_TAG) == LAUNCHER_NAME:
        return True
    raw = run.tags.get(GRPC_INFO_TAG)
    if raw is None:
        return False
    try:
        info = json.loads(raw)
    except ValueError:
        return False
    return bool(info.get("socket")) or info.get("host") in LOCAL_HOSTS


def _worker(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid of the run's latest worker, as Dagster announced it."""
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
            return int(pid.value)
    return None


def gone_worker(instance: DagsterInstance, run: DagsterRun, proc: Path = PROC) -> str | None:
    """Why the run's worker is known to be gone, or None while it may be alive (or the run
    cannot be judged from here)."""
    if not (proc / "stat").exists() or not _launched_here(run):
        return None
    pid = _worker(instance, run.run_id)
    if pid is None:
        return None  # not started yet: run monitoring's start timeout covers it
    ticks = process_start_ticks(pid, proc)
    if ticks is None:
        return f"its worker process {pid} no longer exists"
    # Without the worker's own record (it died before writing it, or a later worker of the
    # run holds another pid) a reused pid is left to max_runtime_seconds: never guessed from
    # wall-clock times, which an NTP step or a VM resume moves.
    tagged_pid, tagged_ticks = tagged_worker(run.tags)
    if tagged_pid == str(pid) and tagged_ticks != str(ticks):
        return f"its worker pid {pid} now belongs to a newer process"
    return None


def fail_run(instance: DagsterInstance, run: DagsterRun, message: str) -> None:
    """``report_run_failed``, with the run marked FAILED first. Dagster stores the failure event
    before it updates the run's status, and its run-retry daemon, reading that event in between,
    finds a run not yet failed and never retries it (seen once in the fault suite, with SQLite
    busy). Marking the status first closes that window; the event then sets it again."""
    failure = DagsterEvent(
        DagsterEventType.RUN_FAILURE.value, job_name=run.job_name, message=message
    )
    instance.run_storage.handle_run_event(run.run_id, failure)
    instance.report_run_failed(run, message)


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
    runs = refresh_runs(instance.get_runs(RunsFilter(statuses=WATCHED), limit=500))
    failed = []
    for run in runs:
        reason = gone_worker(instance, run)
        current = instance.get_run_by_id(run.run_id) if reason else None
        # Re-read: the run may have finished between the listing and the check.
        if reason and current is not None and current.status in WATCHED:
            message = f"Run worker died: {reason}. Marked failed by refresh_dead_run_reaper."
            fail_run(instance, current, message)
            context.log.warning(f"run {current.run_id}: {message}")
            failed.append(current.run_id)
    return SkipReason(
        f"{len(runs)} refresh runs in flight; failed {len(failed)} with a dead worker"
        + (f": {', '.join(failed)}" if failed else "")
    )
