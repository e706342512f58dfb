"""Starts each run's worker from a warm process instead of a new interpreter.

Dagster's ``DefaultRunLauncher`` asks the code server to start a run, and the code server
``spawn``s a fresh interpreter for it: 1.7 of the 2.1 s between a run's launch and its first
step went to importing Dagster, SQLAlchemy and the store clients again (``make bench``). This
launcher keeps one ``multiprocessing`` forkserver, started once per daemon with those libraries
imported, and forks each run's worker from it. The worker then runs exactly what
``dagster api execute_run`` runs (the entry point Dagster's container launchers use), so the
run's events, failure handling, interrupts and retries are Dagster's own.

Only third-party libraries are preloaded, never the code location's own package: the worker
imports the project fresh, so a reloaded code location is what the next run executes.

A run this launcher cannot start warm (its code server was not started by this daemon, or runs
under another interpreter) goes to the code server as before, and so does terminating a run the
code server started.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Self

from dagster import DagsterRun, DefaultRunLauncher, Field
from dagster import _check as check
from dagster._core.launcher.base import LaunchRunContext
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin
from dagster._serdes import ConfigurableClassData, serialize_value

from ig_refresh_dagster.refresh.run.worker import (
    process_start_ticks,
    tagged_worker,
    worker_tag,
)

# What a refresh run imports besides the project itself (measured in benchmarks/latency.py).
DEFAULT_PRELOAD = (
    "dagster._cli.api",
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.event_log.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "dagster_postgres",
    "sqlalchemy",
    "pydantic",
    "pymongo",
    "bson",
    "redis",
    "requests",
    "lxml.html",
    "confluent_kafka",
)
# Tagged on runs this launcher started, so terminate() knows to signal the worker itself.
LAUNCHER_TAG = "ig-refresh/launcher"
LAUNCHER_NAME = "warm"


def run_worker(serialized_args: str) -> None:
    """The forked worker: ``dagster api execute_run``'s body, SIGTERM mapped to an interrupt as
    that command maps it."""
    from dagster._cli.api import execute_run_command
    from dagster._utils.interrupts import setup_interrupt_handlers

    setup_interrupt_handlers()
    execute_run_command.callback(input_json=serialized_args, compressed_input_json=None)


def shares_this_process_environment(run: DagsterRun) -> bool:
    """Whether the run's code server was started by this process, from this interpreter, so a
    worker forked here sees the same code, settings and secrets. A code server run separately
    (``grpc_server`` in the workspace, as in production) may hold secrets this process lacks."""
    remote = run.remote_job_origin
    if remote is None or run.job_code_origin is None:
        return False
    location = remote.repository_origin.code_location_origin
    return (
        isinstance(location, ManagedGrpcPythonEnvCodeLocationOrigin)
        # Unset: the code server was started with this process's own interpreter.
        and location.loadable_target_origin.executable_path in (None, sys.executable)
        and run.job_code_origin.executable_path == sys.executable
    )


class WarmRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose runs start from a preloaded forkserver."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        preload_modules: Sequence[str] = DEFAULT_PRELOAD,
    ):
        super().__init__(inst_data=inst_data)
        self._preload = list(preload_modules)
        self._context: Any = None
        self._workers: dict[str, multiprocessing.process.BaseProcess] = {}
        self._lock = threading.Lock()

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "preload_modules": Field(
                [str],
                is_required=False,
                default_value=list(DEFAULT_PRELOAD),
                description="Modules the forkserver imports once; never the project's own.",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(inst_data=inst_data, preload_modules=config_value["preload_modules"])

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not shares_this_process_environment(run):
            super().launch_run(context)
            return
        origin = check.not_none(run.job_code_origin)
        from dagster._grpc.types import ExecuteRunArgs

        args = ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
        )
        with self._lock:
            self._forget_finished()
            worker = self._forkserver().Process(
                target=run_worker, args=(serialize_value(args),), name=f"dagster-run-{run.run_id}"
            )
            worker.start()
            # multiprocessing joins every child it started before this process may exit, so a
            # daemon told to stop would wait for its runs (up to max_runtime_seconds). A run
            # worker outlives the daemon, as a code server's does: this launcher tracks it
            # instead (the forkserver reaps it).
            multiprocessing.process._children.discard(worker)  # type: ignore[attr-defined]
            self._workers[run.run_id] = worker
        pid = worker.pid
        assert pid is not None  # started
        # No engine event of its own: the worker announces its pid ("Started process for run"),
        # and every row counts against a run's event-log budget (30).
        self._instance.add_run_tags(run.run_id, {LAUNCHER_TAG: LAUNCHER_NAME, **worker_tag(pid)})

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        if run.tags.get(LAUNCHER_TAG) != LAUNCHER_NAME:
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        pid, ticks = tagged_worker(run.tags)
        if not pid.isdigit() or str(process_start_ticks(int(pid))) != ticks:
            self._instance.report_engine_event(
                f"The run worker (pid {pid or 'unknown'}) is gone; nothing to interrupt.",
                run,
                cls=self.__class__,
            )
            return False
        os.kill(int(pid), signal.SIGINT)
        return True

    def _forkserver(self) -> Any:
        if self._context is None:
            self._context = multiprocessing.get_context("forkserver")
            self._context.set_forkserver_preload(self._preload)
        return self._context

    def _forget_finished(self) -> None:
        """Releases the pipe each finished worker held; the forkserver has reaped them."""
        for run_id, worker in list(self._workers.items()):
            if worker.exitcode is not None:
                worker.close()
                del self._workers[run_id]
