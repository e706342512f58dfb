"""Readiness of the Dagster side: the daemon beats, and the refresh sensor actually ticks.

A daemon that beats is not enough: a sensor that raises on every tick (a broker refusing our
credentials, a missing dead-letter topic) leaves the daemon "healthy" while nothing is ingested.
So ``/ready`` also reads the sensor's own tick history.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ig_refresh_dagster.health.daemon import DagsterInstanceView, Heartbeat, SensorHistory


class DaemonCheck:
    """Every daemon the instance needs beat within ``staleness_seconds``."""

    def __init__(self, view: DagsterInstanceView, staleness_seconds: float, timeout: float) -> None:
        self.view, self.staleness, self.timeout = view, staleness_seconds, timeout

    def __call__(self) -> tuple[bool, str]:
        required, beats = self.view.heartbeats(self.timeout)
        return judge_heartbeats(required, beats, self.staleness, time.time())


def judge_heartbeats(
    required: list[str], beats: Mapping[str, Heartbeat], staleness: float, now: float
) -> tuple[bool, str]:
    stale: list[str] = []
    erroring: list[str] = []
    for daemon_type in required:
        beat = beats.get(daemon_type)
        if beat is None:
            stale.append(f"{daemon_type} (no heartbeat)")
        elif now - beat.timestamp > staleness:
            stale.append(f"{daemon_type} (last beat {now - beat.timestamp:.0f}s ago)")
        elif beat.has_errors:
            erroring.append(daemon_type)
    if stale:
        return False, f"stale (>{staleness:g}s): {', '.join(stale)}"
    detail = f"{len(required)} daemon(s) beating: {', '.join(required)}"
    if erroring:
        detail += f"; reporting errors: {', '.join(erroring)}"
    return True, detail


class SensorCheck:
    """Not ready when the sensor's last ``failed_ticks`` ticks all failed, or when it has had no
    successful (or skipped) tick for ``stale_seconds`` while it is running."""

    def __init__(
        self,
        view: DagsterInstanceView,
        name: str,
        failed_ticks: int,
        stale_seconds: float,
        timeout: float,
    ) -> None:
        self.view, self.name, self.timeout = view, name, timeout
        self.failed_ticks, self.stale_seconds = failed_ticks, stale_seconds

    def __call__(self) -> tuple[bool, str]:
        history = self.view.sensor(self.name, self.failed_ticks + 1, self.timeout)
        return judge_sensor(history, self.failed_ticks, self.stale_seconds, time.time())


def judge_sensor(
    history: SensorHistory | None, failed_ticks: int, stale_seconds: float, now: float
) -> tuple[bool, str]:
    if history is None:
        return False, "never ticked: is the daemon running with this code location loaded?"
    if history.status == "STOPPED":
        return True, "stopped (in the UI): no ticks expected"
    latest = history.recent[0] if history.recent else None
    # A tick still being evaluated says nothing yet: count the finished ones behind it.
    finished = [t for t in history.recent if t.status != "STARTED"]
    failing = 0
    for tick in finished:
        if tick.status != "FAILURE":
            break
        failing += 1
    failed = finished[0] if failing else None
    error = f": {failed.error}" if failed is not None and failed.error else ""
    if failed is not None and failing >= failed_ticks:
        return False, f"last {failing} ticks failed, latest {_ago(failed.timestamp, now)}{error}"
    good = history.last_good
    since = max(good.timestamp if good else 0.0, history.started_at or 0.0)
    in_progress = latest is not None and latest.status == "STARTED"
    in_progress = in_progress and now - latest.timestamp <= stale_seconds
    if now - since > stale_seconds and not in_progress:
        last = f"last good tick {_ago(good.timestamp, now)}" if good else "no good tick yet"
        latest_text = f"; latest {latest.status} {_ago(latest.timestamp, now)}" if latest else ""
        return False, f"{last} (limit {stale_seconds:g}s while running){latest_text}{error}"
    if latest is None:
        return True, "running; first tick not yet recorded"
    detail = f"running; latest tick {latest.status} {_ago(latest.timestamp, now)}"
    if failing:
        detail += f"; {failing} failed in a row{error}"
    return True, detail


def _ago(timestamp: float, now: float) -> str:
    return f"{max(0.0, now - timestamp):.0f}s ago"
