"""The warm run launcher's decisions, on real processes and a real instance: which runs it may
fork, what the forkserver preloads, and how it terminates a worker. The launcher on the real
daemon (sensor runs, termination from the UI's path, a killed forkserver) is in
faults/test_warm_launcher_faults.py."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bson import ObjectId
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    instance_for_test,
)
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.events import EngineEventData
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.remote_origin import (
    GrpcServerCodeLocationOrigin,
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster.refresh.housekeeping.dead_runs import gone_worker
from ig_refresh_dagster.refresh.run.warm_launcher import (
    DEFAULT_PRELOAD,
    LAUNCHER_NAME,
    LAUNCHER_TAG,
    WarmRunLauncher,
    shares_this_process_environment,
)
from ig_refresh_dagster.refresh.run.worker import WORKER_TAG, worker_tag
from ig_refresh_dagster_tests.refresh.test_run_status_sensors import make_run


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test(
        overrides={
            "run_launcher": {
                "module": "ig_refresh_dagster.refresh.run.warm_launcher",
                "class": "WarmRunLauncher",
            }
        }
    ) as inst:
        yield inst


def located(run, location, executable: str = sys.executable):
    """``run`` as if its job came from ``location``, run by ``executable``."""
    pointer = ModuleCodePointer("ig_refresh_dagster", "defs", str(PROJECT_ROOT))
    return run._replace(
        remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(location, "__repository__"), run.job_name
        ),
        job_code_origin=JobPythonOrigin(run.job_name, RepositoryPythonOrigin(executable, pointer)),
    )


def managed(executable: str | None = None) -> ManagedGrpcPythonEnvCodeLocationOrigin:
    """A ``python_module`` workspace entry: the code server this process starts itself (with
    its own interpreter when no ``executable_path`` is given, as in workspace.yaml)."""
    return ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=executable, module_name="ig_refresh_dagster"),
        "ig-refresh",
    )


def test_the_instance_config_builds_the_warm_launcher(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        assert launcher.inst_data is not None
    finally:
        instance.dispose()


def test_only_a_code_server_this_process_started_is_forked_here(instance) -> None:
    run = make_run(instance, str(ObjectId()))
    assert shares_this_process_environment(located(run, managed()))
    assert shares_this_process_environment(located(run, managed(sys.executable)))
    production = GrpcServerCodeLocationOrigin(host="code-server", port=4000, location_name="x")
    assert not shares_this_process_environment(located(run, production)), (
        "a separate code server holds settings and secrets this process may lack"
    )
    other_python = "/opt/other-venv/bin/python"
    assert not shares_this_process_environment(located(run, managed(other_python)))
    assert not shares_this_process_environment(located(run, managed(), other_python))
    assert not shares_this_process_environment(run), "a run with no origin at all"


def test_the_forkserver_preloads_no_project_code() -> None:
    """A reloaded code location must be what the next run executes, so the forkserver imports
    only libraries: importing every preloaded module pulls in nothing of the project."""
    probe = (
        "import importlib, sys\n"
        f"for name in {list(DEFAULT_PRELOAD)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('ig_refresh_dagster')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A stand-in run worker that reports the interrupt it gets, as a Dagster worker would."""
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: (print('interrupted', flush=True), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait(10)


def started_warm(instance: DagsterInstance, pid: int):
    run = make_run(instance, str(ObjectId()), **{LAUNCHER_TAG: LAUNCHER_NAME, **worker_tag(pid)})
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name), run.run_id
    )
    return instance.get_run_by_id(run.run_id)


def test_terminate_interrupts_the_worker_and_marks_the_run_canceling(instance, sleeper) -> None:
    run = started_warm(instance, sleeper.pid)
    assert instance.run_launcher.terminate(run.run_id) is True
    assert sleeper.wait(10) == 0
    assert sleeper.stdout is not None and sleeper.stdout.read().strip() == "interrupted"
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELING


def test_terminate_never_signals_a_pid_a_newer_process_now_holds(instance, sleeper) -> None:
    pid = sleeper.pid
    run = started_warm(instance, pid)
    instance.add_run_tags(run.run_id, {WORKER_TAG: f"{pid}:1"})  # the worker started at boot
    assert instance.run_launcher.terminate(run.run_id) is False
    time.sleep(0.5)
    assert sleeper.poll() is None, "the process now holding the pid was left alone"
    messages = [
        e.message for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
    ]
    assert any("is gone; nothing to interrupt" in m for m in messages)


def test_terminate_of_a_finished_run_does_nothing(instance, sleeper) -> None:
    run = started_warm(instance, sleeper.pid)
    instance.report_run_failed(run, "ended")
    assert instance.run_launcher.terminate(run.run_id) is False
    assert sleeper.poll() is None


def test_the_reaper_watches_warm_runs_as_launched_here(instance) -> None:
    """A warm run carries no code-server tag; the reaper still judges its worker."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = started_warm(instance, proc.pid)
    proc.kill()
    proc.wait(10)
    instance.report_engine_event(
        f"Started process for run (pid: {proc.pid}).", run, EngineEventData.in_process(proc.pid)
    )
    assert gone_worker(instance, run) == f"its worker process {proc.pid} no longer exists"
