"""``ig-refresh retention``: bounded Dagster storage, on demand."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    retention = sub.add_parser(
        "retention", help="delete old finished Dagster runs; archive gone accounts' partitions"
    )
    retention.add_argument("--older-than-days", type=int, help="default: $RUN_RETENTION_DAYS or 30")
    retention.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    retention.add_argument("--max-runs", type=int, default=100_000, help="runs per pass")
    retention.set_defaults(run=_run)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, rest: list[str]) -> int:
    from ig_refresh_dagster.refresh.housekeeping.retention import retention_command

    return retention_command(args.older_than_days, args.dry_run, args.max_runs)
