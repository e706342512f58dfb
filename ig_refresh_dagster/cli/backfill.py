"""``ig-refresh backfill``: refresh accounts chosen by a query, as a Dagster backfill."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ig_refresh_dagster.cli.operator import operator_resources


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


def _backfill(args: argparse.Namespace, parser: argparse.ArgumentParser, rest: list[str]) -> int:
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
