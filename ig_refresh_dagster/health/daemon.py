"""What the Dagster instance knows about the daemon and the refresh sensor, for ``/ready`` and
``/metrics``.

Adapter around non-public ``DagsterInstance`` methods (``get_daemon_heartbeats``,
``get_required_daemon_types``, ``all_instigator_state`` (also for the sensor's saved cursor,
which ``/metrics`` compares with the topic's offsets), ``get_ticks``, and the
``InstigatorType``/``TickStatus`` enums they take), kept in this one module on purpose: the
public route, the webserver's GraphQL, needs a webserver, and the sidecar must answer where
none runs (the demo, a separate pod). These are read-only calls; the first two
are what ``dagster-daemon liveness-check`` relies on, the last two what the UI's sensor page
shows. Everything leaves this module as plain models, so nothing else touches Dagster types.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from ig_refresh_dagster.health.clients import KeptClient

GOOD_TICK_STATUSES = ("SUCCESS", "SKIPPED")


class Heartbeat(BaseModel):
    timestamp: float
    has_errors: bool


class SensorTick(BaseModel):
    status: str  # STARTED, SKIPPED, SUCCESS or FAILURE
    timestamp: float
    error: str | None = None


class SensorHistory(BaseModel):
    status: str  # RUNNING, STOPPED or DECLARED_IN_CODE (running by its default)
    started_at: float | None
    recent: list[SensorTick]  # newest first
    last_good: SensorTick | None  # the newest SUCCESS or SKIPPED tick


class DagsterInstanceView:
    """The instance is opened once and kept: opening storage on every probe costs more than the
    check. One reader at a time; reopened after a failure."""

    def __init__(self, dagster_home: str | None) -> None:
        self._home = dagster_home
        self.instance = KeptClient("dagster", self._open, lambda instance: instance.dispose())

    def _open(self) -> Any:
        """``DagsterInstance.get()``'s rules, applied to the configured DAGSTER_HOME."""
        if not self._home:
            raise RuntimeError("DAGSTER_HOME is not set")
        if not os.path.isabs(self._home) or not os.path.isdir(self._home):
            raise RuntimeError(f"DAGSTER_HOME {self._home!r} is not an existing absolute directory")
        from dagster import DagsterInstance

        return DagsterInstance.from_config(self._home)

    def heartbeats(self, timeout: float) -> tuple[list[str], dict[str, Heartbeat]]:
        """(the daemon types this instance needs, the latest heartbeat of each daemon type)."""

        def read(instance: Any) -> tuple[list[str], dict[str, Heartbeat]]:
            required = sorted(set(instance.get_required_daemon_types()) | {"SENSOR"})
            beats = {
                daemon_type: Heartbeat(timestamp=beat.timestamp, has_errors=bool(beat.errors))
                for daemon_type, beat in instance.get_daemon_heartbeats().items()
            }
            return required, beats

        return self.instance.use(read, timeout)

    def sensor(self, name: str, recent: int, timeout: float) -> SensorHistory | None:
        """The sensor's state and its ``recent`` newest ticks; None when the daemon has never
        ticked a sensor of that name (no state is stored until then)."""

        def read(instance: Any) -> SensorHistory | None:
            from dagster._core.scheduler.instigation import TickStatus

            state = _live_state(instance, name)
            if state is None:
                return None
            origin_id, selector_id = state.instigator_origin_id, state.selector_id
            ticks = instance.get_ticks(origin_id, selector_id, limit=recent)
            good = instance.get_ticks(
                origin_id,
                selector_id,
                limit=1,
                statuses=[TickStatus[status] for status in GOOD_TICK_STATUSES],
            )
            data = state.instigator_data
            return SensorHistory(
                status=state.status.value,
                started_at=getattr(data, "last_sensor_start_timestamp", None),
                recent=[_tick(t) for t in ticks],
                last_good=_tick(good[0]) if good else None,
            )

        return self.instance.use(read, timeout)

    def sensor_cursor(self, name: str, timeout: float) -> str | None:
        """The cursor the daemon saved after the sensor's last good tick (read-only); None when
        the sensor has never ticked or never set one."""

        def read(instance: Any) -> str | None:
            state = _live_state(instance, name)
            return None if state is None else getattr(state.instigator_data, "cursor", None)

        return self.instance.use(read, timeout)

    def close(self) -> None:
        self.instance.close()


def _live_state(instance: Any, name: str) -> Any:
    """The stored state of the sensor called ``name``; several code locations may define the
    name, and the one ticked last is the live one. None until the daemon first ticks it."""
    from dagster._core.scheduler.instigation import InstigatorType

    states = [
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        if s.instigator_name == name
    ]
    return max(states, key=_last_tick_start) if states else None


def _last_tick_start(state: Any) -> float:
    return getattr(state.instigator_data, "last_tick_start_timestamp", None) or 0.0


def _tick(tick: Any) -> SensorTick:
    return SensorTick(
        status=tick.status.value, timestamp=tick.timestamp, error=_root_cause(tick.error)
    )


def _root_cause(error: Any) -> str | None:
    """The innermost cause's message: Dagster wraps the sensor's exception in
    ``SensorExecutionError: Error occurred during the execution of evaluation_fn…``."""
    if error is None:
        return None
    while error.cause is not None:
        error = error.cause
    return error.message.strip()
