"""Dagster daemon liveness from the instance's heartbeats.

Adapter around non-public ``DagsterInstance`` methods (``get_daemon_heartbeats``,
``get_required_daemon_types``), kept in this one module on purpose: the public route, the
webserver's GraphQL, needs a webserver, and the sidecar must answer where none runs (the demo,
a separate pod). These are the read-only calls ``dagster-daemon liveness-check`` relies on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class DaemonHeartbeats:
    """The Dagster daemon is alive when every daemon the instance needs beat recently.

    The instance is opened once and kept: opening storage on every probe costs more than the
    check. Access is serialized; a probe that finds a previous one still stuck reports that.
    """

    def __init__(self, dagster_home: str | None, staleness_seconds: float) -> None:
        self._home = dagster_home
        self._staleness = staleness_seconds
        self._lock = threading.Lock()
        self._instance: Any = None

    def check(self, timeout: float) -> tuple[bool, str]:
        if not self._lock.acquire(timeout=timeout):
            return False, "previous heartbeat check still running"
        try:
            instance = self._instance or self._open()
            required = set(instance.get_required_daemon_types()) | {"SENSOR"}
            return self._judge(sorted(required), instance.get_daemon_heartbeats(), time.time())
        finally:
            self._lock.release()

    def _open(self) -> Any:
        """``DagsterInstance.get()``'s rules, applied to the configured DAGSTER_HOME."""
        if not self._home:
            raise RuntimeError("DAGSTER_HOME is not set")
        if not os.path.isabs(self._home) or not os.path.isdir(self._home):
            raise RuntimeError(f"DAGSTER_HOME {self._home!r} is not an existing absolute directory")
        from dagster import DagsterInstance

        self._instance = DagsterInstance.from_config(self._home)
        return self._instance

    def _judge(
        self, required: list[str], heartbeats: Mapping[str, Any], now: float
    ) -> tuple[bool, str]:
        stale: list[str] = []
        erroring: list[str] = []
        for daemon_type in required:
            beat = heartbeats.get(daemon_type)
            if beat is None:
                stale.append(f"{daemon_type} (no heartbeat)")
            elif now - beat.timestamp > self._staleness:
                stale.append(f"{daemon_type} (last beat {now - beat.timestamp:.0f}s ago)")
            elif beat.errors:
                erroring.append(daemon_type)
        if stale:
            return False, f"stale (>{self._staleness:g}s): {', '.join(stale)}"
        detail = f"{len(required)} daemon(s) beating: {', '.join(required)}"
        if erroring:
            detail += f"; reporting errors: {', '.join(erroring)}"
        return True, detail

    def close(self, timeout: float = 5.0) -> None:
        """Release storage; a check stuck past ``timeout`` must not block shutdown, so skip."""
        if not self._lock.acquire(timeout=timeout):
            log.warning("Dagster instance still in use at shutdown; not disposing it")
            return
        try:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None
        finally:
            self._lock.release()
