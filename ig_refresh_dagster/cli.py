"""``ig-refresh``: the console script behind the README commands and the health sidecar."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ig-refresh", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="embedded stack + Dagster UI (:3000) + daemon + health (:3053)")
    demo = sub.add_parser("demo", help="process the demo queue, print a summary, exit")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for runs")
    sub.add_parser("health", help="health sidecar (/health, /ready)", add_help=False)
    _add_backfill(sub)
    partitions = sub.add_parser("partitions", help="manage the instagram_accounts partitions")
    cleanup = partitions.add_subparsers(dest="action", required=True).add_parser(
        "cleanup", help="remove keys that are not account ids or whose Account no longer exists"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    args, rest = parser.parse_known_args(argv)
    if args.command == "health":
        from ig_refresh_dagster.health.server import main as health_main

        return health_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "backfill":
        return _backfill(args)
    if args.command == "partitions":
        return _cleanup_partitions(args.dry_run)
    try:
        from ig_refresh_dagster.devstack.demo import run_demo, run_dev
        from ig_refresh_dagster.devstack.stack import data_dir
    except ImportError as exc:
        print(
            f"ig-refresh {args.command} runs the embedded stack, which needs the dev extra "
            f"(pip install -e '.[dev]' from a checkout): {exc}",
            file=sys.stderr,
        )
        return 2
    if args.command == "demo":
        return run_demo(data_dir(), timeout=args.timeout)
    return run_dev(data_dir())


def _add_backfill(sub: Any) -> None:
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


@contextmanager
def _operator_resources() -> Iterator[Any]:
    """The code location's own resources, initialised outside a run (EnvVars resolved)."""
    from dagster import build_resources

    from ig_refresh_dagster.definitions import build_resources as location_resources

    resources = location_resources()
    with build_resources({k: resources[k] for k in ("mongo", "instagram")}) as initialised:
        yield initialised


def _backfill(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance
    from pydantic import ValidationError

    from ig_refresh_dagster.refresh.backfill import launch_backfill, plan_backfill
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
    with _operator_resources() as resources:
        plan = plan_backfill(query, resources.mongo, resources.instagram)
    print("\n".join(plan.report()))
    if args.dry_run or not plan.accounts:
        print("dry run: nothing launched" if args.dry_run else "nothing to launch")
        return 0
    with DagsterInstance.get() as instance:
        backfill_id = launch_backfill(instance, plan)
    print(f"backfill {backfill_id} created: Dagster UI → Runs → Backfills shows its progress")
    return 0


def _cleanup_partitions(dry_run: bool) -> int:
    from dagster import DagsterInstance

    from ig_refresh_dagster.refresh.partition_cleanup import apply_cleanup, plan_cleanup
    from ig_refresh_dagster.stores.selection import AccountSelector

    with DagsterInstance.get() as instance, _operator_resources() as resources:
        plan = plan_cleanup(instance, AccountSelector(resources.mongo.db()))
        print("\n".join(plan.report()))
        if dry_run:
            print(f"dry run: {len(plan.keys)} partitions would be removed")
            return 0
        apply_cleanup(instance, plan)
    print(f"removed {len(plan.keys)} partitions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
