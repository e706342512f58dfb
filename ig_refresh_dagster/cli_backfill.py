"""``ig-refresh backfill status`` and ``ig-refresh backfill report``: what a backfill did."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ig_refresh_dagster.refresh.backfill_report import AccountOutcome

COLUMNS = list(AccountOutcome.model_fields)


def add_report_commands(backfill: argparse.ArgumentParser) -> None:
    """Sub-commands of ``ig-refresh backfill``; without one it launches a backfill."""
    actions = backfill.add_subparsers(dest="action")
    status = actions.add_parser(
        "status", help="progress by outcome, rate so far and ETA at the backfill share"
    )
    status.add_argument("backfill_id", nargs="?", help="default: the latest backfill")
    report = actions.add_parser("report", help="one row per account, as CSV and/or JSON")
    report.add_argument("backfill_id")
    report.add_argument("--csv", metavar="FILE", help="write CSV to FILE ('-': stdout)")
    report.add_argument("--json", metavar="FILE", help="write JSON to FILE ('-': stdout)")


def run_report_command(
    args: argparse.Namespace, resources: Callable[[], AbstractContextManager[Any]]
) -> int:
    """``resources``: the code location's initialised resources (``cli._operator_resources``)."""
    from dagster import DagsterInstance

    from ig_refresh_dagster.refresh.backfill_report import (
        BackfillNotFound,
        backfill_report,
        latest_backfill_id,
    )

    if args.action == "report" and not (args.csv or args.json):
        print("ig-refresh backfill report: give --csv FILE and/or --json FILE", file=sys.stderr)
        return 2
    with DagsterInstance.get() as instance, resources() as initialised:
        try:
            backfill_id = args.backfill_id or latest_backfill_id(instance)
            report = backfill_report(instance, initialised.mongo.db(), backfill_id)
        except BackfillNotFound as exc:
            print(f"ig-refresh backfill {args.action}: {exc}", file=sys.stderr)
            return 1
        if args.action == "status":
            capacity = initialised.instagram.background_capacity() if report.waiting() else None
            print("\n".join(report.status_lines(datetime.now(UTC), capacity)))
            return 0
    if args.csv:
        _write(args.csv, lambda out: _csv(report.accounts, out))
    if args.json:
        _write(args.json, lambda out: out.write(report.model_dump_json(indent=2) + "\n"))
    if "-" not in (args.csv, args.json):
        print(f"{len(report.accounts)} accounts: {report.counts()}; page: {report.page}")
    return 0


def _write(target: str, write: Callable[[IO[str]], object]) -> None:
    if target == "-":
        write(sys.stdout)
        return
    with Path(target).open("w", encoding="utf-8", newline="") as out:
        write(out)


def _csv(rows: list[AccountOutcome], out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.model_dump(mode="json").items()})
