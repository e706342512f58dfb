"""Crash recovery pieces: the dead-run reaper against real processes, and the instance
configuration (run monitoring, run retries) that both dagster.yaml files must carry.
The whole path on a real daemon is in faults/test_daemon_crash.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from bson import ObjectId
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.events import EngineEventData

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster.refresh.housekeeping.dead_runs import (
    GRPC_INFO_TAG,
    gone_worker,
    refresh_dead_run_reaper,
)
from ig_refresh_dagster.refresh.run.worker import (
    WORKER_TAG,
    process_start_ticks,
    worker_identity_tags,
)
from ig_refresh_dagster_tests.refresh.test_run_status_sensors import make_asset_job_run, make_run


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def started_run(instance: DagsterInstance, pid: int, host: str = "localhost", make=make_run):
    """A refresh run as the DefaultRunLauncher leaves it: launched through a code server on
    ``host``, its worker's pid announced, status STARTED."""
    run = make(instance, str(ObjectId()), **{GRPC_INFO_TAG: json.dumps({"host": host})})
    instance.report_engine_event(
        f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
    )
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name), run.run_id
    )
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    return run


def reap(instance: DagsterInstance) -> None:
    with build_sensor_context(instance=instance) as context:
        refresh_dead_run_reaper(context)


@pytest.fixture
def worker() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait(10)


def test_run_whose_worker_was_killed_is_failed(instance, worker) -> None:
    run = started_run(instance, worker.pid)
    reap(instance)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    worker.kill()
    worker.wait(10)
    reap(instance)
    dead = instance.get_run_by_id(run.run_id)
    assert dead.status == DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert f"worker process {worker.pid} no longer exists" in failure.message


def test_a_reaped_run_is_failed_before_its_failure_event_is_visible(
    worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster's run-retry daemon reads failure events, then the runs: a run still STARTED when
    its failure event could be read was never retried (a flake of the fault suite). The spy
    wraps the real event storage and records the run's status as each event is stored."""
    with instance_for_test(
        overrides={"run_retries": {"enabled": True, "max_retries": 3}}
    ) as instance:
        run = started_run(instance, worker.pid)
        storage = instance.event_log_storage
        seen: list[DagsterRunStatus] = []
        store = storage.store_event

        def recording(event):
            dagster_event = event.get_dagster_event() if event.is_dagster_event else None
            if dagster_event is not None and dagster_event.is_run_failure:
                seen.append(instance.get_run_by_id(run.run_id).status)
            return store(event)

        monkeypatch.setattr(storage, "store_event", recording)
        worker.kill()
        worker.wait(10)
        reap(instance)
        assert seen == [DagsterRunStatus.FAILURE]
        failed = instance.get_run_by_id(run.run_id)
        assert failed.status == DagsterRunStatus.FAILURE
        assert failed.tags["dagster/will_retry"] == "true", "Dagster still decides the retry"


def fake_proc(tmp_path: Path, pid: int, ticks: int, btime: int) -> Path:
    """A /proc written by the test: what cannot be made on demand (a pid wrapped around to a
    new process, a wall-clock step) is shown to the reaper the way the kernel would show it."""
    (tmp_path / "stat").write_text(f"cpu 1 2 3\nbtime {btime}\n")
    (tmp_path / str(pid)).mkdir(exist_ok=True)
    (tmp_path / str(pid) / "stat").write_text(f"{pid} (python3 x) S " + "0 " * 18 + f"{ticks} 0\n")
    return tmp_path


def test_asset_job_run_whose_worker_was_killed_is_failed(instance, worker) -> None:
    """UI Materialize and backfills run as ``__ASSET_JOB``: their dead workers are reaped too."""
    run = started_run(instance, worker.pid, make=make_asset_job_run)
    worker.kill()
    worker.wait(10)
    reap(instance)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE


def test_pid_now_held_by_a_newer_process_counts_as_dead(instance, tmp_path: Path) -> None:
    """The worker recorded start tick 5 at launch; the process now holding pid 4242 started at
    tick 6000."""
    run = started_run(instance, 4242)
    instance.add_run_tags(run.run_id, {WORKER_TAG: "4242:5"})
    proc = fake_proc(tmp_path, 4242, 6000, int(time.time()) - 3600)
    reason = gone_worker(instance, instance.get_run_by_id(run.run_id), proc=proc)
    assert reason == "its worker pid 4242 now belongs to a newer process"
    fake_proc(tmp_path, 4242, 5, int(time.time()) - 3600)
    assert gone_worker(instance, instance.get_run_by_id(run.run_id), proc=proc) is None


def test_live_worker_survives_a_forward_wall_clock_step(instance, worker, tmp_path: Path) -> None:
    """After an NTP step or a VM resume the kernel reports boot time (``btime``) an hour later,
    so wall-clock start times of every process move an hour forward; the worker is the same."""
    ticks = process_start_ticks(worker.pid)
    assert ticks is not None
    run = started_run(instance, worker.pid)
    instance.add_run_tags(run.run_id, {WORKER_TAG: f"{worker.pid}:{ticks}"})
    stepped = (
        int(time.time()) + 3600 - int(Path("/proc/uptime").read_text().split()[0].split(".")[0])
    )
    proc = fake_proc(tmp_path, worker.pid, ticks, stepped)
    assert gone_worker(instance, instance.get_run_by_id(run.run_id), proc=proc) is None


def test_worker_tags_its_run_with_its_own_identity() -> None:
    """What the run records at start is what the reaper later reads for the same process."""
    (tag,) = worker_identity_tags().values()
    pid, ticks = tag.split(":")
    assert (int(pid), int(ticks)) == (os.getpid(), process_start_ticks(os.getpid()))


def test_zombie_worker_counts_as_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 20
    while Path(f"/proc/{proc.pid}/stat").read_text().split(")")[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "child did not exit"
        time.sleep(0.05)
    try:
        assert process_start_ticks(proc.pid) is None
    finally:
        proc.wait(10)


def test_run_launched_on_another_host_is_left_to_run_monitoring(instance, worker) -> None:
    run = started_run(instance, worker.pid, host="code-server.internal")
    worker.kill()
    worker.wait(10)
    reap(instance)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED


RECOVERY_SECTIONS = ("run_monitoring", "run_retries")


@pytest.mark.parametrize("config", ["dagster.yaml", "deploy/dagster-postgres.yaml"])
def test_instance_retries_crashes_only_and_bounds_runtime(config: str, tmp_path: Path) -> None:
    """Loaded by Dagster itself (the SQLite one; the PostgreSQL one carries the same sections)."""
    sections = yaml.safe_load((PROJECT_ROOT / config).read_text())
    embedded = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert {k: sections[k] for k in RECOVERY_SECTIONS} == {
        k: embedded[k] for k in RECOVERY_SECTIONS
    }
    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert 0 < instance.run_monitoring_max_runtime_seconds <= 3600
        assert instance.run_monitoring_start_timeout_seconds <= 120
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries >= 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
