"""``ig-refresh backfill``: refresh accounts chosen by a query, as a Dagster backfill; and
``backfill status`` / ``backfill report``: what a backfill did."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ig_refresh_dagster.cli.operator import operator_resources
from ig_refresh_dagster.refresh.launch.backfill_report import AccountOutcome


def register(sub: Any) -> None:
    backfill = sub.add_parser(
        "backfill",
        help="refresh accounts chosen by a query, as a Dagster backfill",
        description="Every criterion given must hold. Needs the production settings "
        "(MONGODB_URI, REDIS_URL, ...) and DAGSTER_HOME of the deployment.",
    )
    backfill.add_argument(
        "--handles-file", type=Path, help="handles or account ids, one per line (# comments)"
    )
    backfill.add_argument("--ids", nargs="+", default=[], metavar="ID", help="account ids")
    backfill.add_argument("--stale-days", type=int, help="not refreshed for N days (or never)")
    backfill.add_argument("--followers-min", type=int)
    backfill.add_argument("--followers-max", type=int)
    backfill.add_argument("--never-refreshed", action="store_true")
    backfill.add_argument("--failed-days", type=int, help="a refresh failed in the last N days")
    backfill.add_argument("--limit", type=int, help="at most N accounts, most overdue first")
    backfill.add_argument(
        "--dry-run", action="store_true", help="print count, sample and ETA; launch nothing"
    )
    backfill.set_defaults(run=_backfill)
    add_report_commands(backfill)


def _backfill(args: argparse.Namespace, parser: argparse.ArgumentParser, rest: list[str]) -> int:
    if args.action:
        return run_report_command(args)
    from dagster import DagsterInstance
    from pydantic import ValidationError

    from ig_refresh_dagster.refresh.launch.backfill import launch_backfill, plan_backfill
    from ig_refresh_dagster.stores.selection import AccountQuery, query_errors

    lines = []
    if args.handles_file:
        text = args.handles_file.read_text(encoding="utf-8")
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
    try:
        criteria = {f: getattr(args, f) for f in AccountQuery.model_fields if f != "accounts"}
        query = AccountQuery(accounts=lines, **criteria)
    except ValidationError as exc:
        for error in query_errors(exc):
            print(f"ig-refresh backfill: {error}", file=sys.stderr)
        return 2
    with operator_resources() as resources:
        plan = plan_backfill(query, resources.mongo, resources.instagram)
    print("\n".join(plan.report()))
    if args.dry_run or not plan.accounts:
        print("dry run: nothing launched" if args.dry_run else "nothing to launch")
        return 0
    with DagsterInstance.get() as instance:
        backfill_id = launch_backfill(instance, plan)
    print(f"backfill {backfill_id} created: Dagster UI → Runs → Backfills shows its progress")
    return 0


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


def run_report_command(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from ig_refresh_dagster.refresh.launch.backfill_report import (
        BackfillNotFound,
        backfill_report,
        latest_backfill_id,
    )

    if args.action == "report" and not (args.csv or args.json):
        print("ig-refresh backfill report: give --csv FILE and/or --json FILE", file=sys.stderr)
        return 2
    with DagsterInstance.get() as instance, operator_resources() as initialised:
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
