"""Who runs a refresh: the worker tags its own run with its pid and its start time in clock
ticks after boot, which the dead-run reaper (``housekeeping/dead_runs.py``) later compares with
whatever process then holds that pid. Boot-relative ticks, so a wall-clock step (NTP, a VM
resume) cannot make a live worker look like a newer process."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# "<pid>:<start ticks after boot>" of the run's worker, tagged by the worker itself at start.
WORKER_TAG = "ig-refresh/worker"
PROC = Path("/proc")


def process_start_ticks(pid: int, proc: Path = PROC) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (a wall-clock step cannot change
    it), or None if there is no such live process (a zombie counts as gone: it has exited and
    only waits to be reaped)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which sits in parentheses and may itself contain spaces.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def worker_tag(pid: int, proc: Path = PROC) -> dict[str, str]:
    """Process ``pid``'s identity as a run tag; empty when it is already gone."""
    ticks = process_start_ticks(pid, proc)
    return {WORKER_TAG: f"{pid}:{ticks}"} if ticks is not None else {}


def tagged_worker(tags: Mapping[str, str]) -> tuple[str, str]:
    """The pid and start ticks a run's worker tag holds, as written; both empty without one."""
    pid, _, ticks = tags.get(WORKER_TAG, "").partition(":")
    return pid, ticks


def worker_identity_tags(proc: Path = PROC) -> dict[str, str]:
    """Set by the run worker on itself when it starts (the warm launcher sets the same tag as
    it forks the worker), for the reaper to compare with whatever process then holds that pid."""
    return worker_tag(os.getpid(), proc)
