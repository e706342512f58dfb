"""The warm launcher on the real daemon: sensor runs' workers are forked from the forkserver the
daemon started, the UI's Terminate reaches such a worker, a killed forkserver costs no run (its
workers keep running; the next launch starts a new one), and a daemon told to stop does not wait
for its runs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from dagster import DagsterRun, DagsterRunStatus

from ig_refresh_dagster.refresh.run.warm_launcher import LAUNCHER_NAME, LAUNCHER_TAG
from ig_refresh_dagster.refresh.run.worker import WORKER_TAG
from ig_refresh_dagster_tests.faults.conftest import FaultStack, wait_until

pytestmark = pytest.mark.slow


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def held_run(stack: FaultStack, account: str) -> DagsterRun | None:
    """The account's run once its worker is waiting at the stand-in's gate."""
    for run in stack.runs():
        if (
            run.tags.get("dagster/partition") == account
            and run.status == DagsterRunStatus.STARTED
            and stack.in_flight_at_gate(1)
        ):
            return run
    return None


def worker_pid(run: DagsterRun) -> int:
    return int(run.tags[WORKER_TAG].split(":")[0])


def test_sensor_runs_fork_from_the_daemons_forkserver_and_terminate_from_the_ui(
    stack: FaultStack,
) -> None:
    (account,) = stack.seed(1)
    stack.standin.gate.clear()
    try:
        stack.publish([account])
        run = wait_until(lambda: held_run(stack, account), 120, "the refresh at the gate")
        assert run.tags[LAUNCHER_TAG] == LAUNCHER_NAME
        forkserver = parent_pid(worker_pid(run))
        assert "multiprocessing.forkserver" in command_line(forkserver)
        assert stack.daemon is not None and parent_pid(forkserver) == stack.daemon.pid

        # What the UI's Terminate button calls.
        stack.instance().run_coordinator.cancel_run(run.run_id)
        ended = wait_until(
            lambda: (r := stack.instance().get_run_by_id(run.run_id)).is_finished and r,
            60,
            "the terminated run ended",
        )
    finally:
        stack.standin.gate.set()
    assert ended.status == DagsterRunStatus.CANCELED
    wait_until(lambda: not Path(f"/proc/{worker_pid(run)}").exists(), 30, "the worker exited")
    entry = wait_until(
        lambda: stack.db["DataRefreshLog"].find_one(
            {"runId": run.run_id, "status": {"$ne": "IN_PROGRESS"}}
        ),
        60,
        "the terminated run's entry closed",
    )
    assert entry["status"] == "FAILED"
    assert entry["reason"] == "terminated"


def test_a_killed_forkserver_costs_no_run(stack: FaultStack) -> None:
    first, second = stack.seed(2)
    stack.standin.gate.clear()
    try:
        stack.publish([first])
        run = wait_until(lambda: held_run(stack, first), 120, "the refresh at the gate")
        forkserver = parent_pid(worker_pid(run))
        os.kill(forkserver, signal.SIGKILL)
    finally:
        stack.standin.gate.set()
    stack.publish([second])
    stack.wait_settled([first, second], timeout=180)
    assert stack.instance().get_run_by_id(run.run_id).status == DagsterRunStatus.SUCCESS
    (later,) = [r for r in stack.runs() if r.tags["dagster/partition"] == second]
    assert later.tags[LAUNCHER_TAG] == LAUNCHER_NAME
    assert stack.daemon is not None
    assert forkservers_of(stack.daemon.pid) - {forkserver}, "a new forkserver started the next run"


def forkservers_of(daemon: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        try:
            if parent_pid(pid) == daemon and "multiprocessing.forkserver" in command_line(pid):
                found.add(pid)
        except (OSError, IndexError):
            continue
    return found


def test_a_daemon_told_to_stop_exits_at_once_and_its_run_finishes(stack: FaultStack) -> None:
    """SIGTERM to the daemon alone, as a supervisor stops it: it exits within seconds instead
    of waiting for its runs, and the worker it forked finishes its refresh on its own (before
    the fix the daemon was still there 90 s later, waiting for the worker)."""
    (account,) = stack.seed(1)
    stack.standin.gate.clear()
    try:
        stack.publish([account])
        run = wait_until(lambda: held_run(stack, account), 120, "the refresh at the gate")
        daemon = stack.daemon
        assert daemon is not None
        stopped = time.monotonic()
        os.kill(daemon.pid, signal.SIGTERM)
        wait_until(lambda: daemon.poll() is not None, 20, "the daemon exited", step=0.2)
        print(f"\nSIGTERM -> daemon exited: {time.monotonic() - stopped:.1f}s")
        assert Path(f"/proc/{worker_pid(run)}").exists(), "the worker outlived the daemon"
    finally:
        stack.standin.gate.set()
    finished = wait_until(
        lambda: (r := stack.instance().get_run_by_id(run.run_id)).is_finished and r,
        60,
        "the orphaned worker's run finished",
    )
    assert finished.status == DagsterRunStatus.SUCCESS
    daemon.stop()  # the rest of its process group (the code server waits for a heartbeat)
    stack.start_daemon()
    stack.wait_settled([account], timeout=60)
