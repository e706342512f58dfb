"""``ig-refresh partitions cleanup`` and ``partitions cap``: the account partitions by hand."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ig_refresh_dagster import settings
from ig_refresh_dagster.cli.operator import operator_resources


def register(sub: Any) -> None:
    partitions = sub.add_parser("partitions", help="manage the instagram_accounts partitions")
    partitions.set_defaults(run=_run)
    partition_actions = partitions.add_subparsers(dest="action", required=True)
    cleanup = partition_actions.add_parser(
        "cleanup", help="remove keys that are not account ids or whose Account no longer exists"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    partition_actions.add_parser(
        "cap",
        help="dry run of account_partition_cap_sensor: which keys it would evict, and why",
    )


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, rest: list[str]) -> int:
    return _cap_report() if args.action == "cap" else _cleanup_partitions(args.dry_run)


def _cleanup_partitions(dry_run: bool) -> int:
    from dagster import DagsterInstance

    from ig_refresh_dagster.refresh.housekeeping.partition_cleanup import (
        apply_cleanup,
        plan_cleanup,
    )
    from ig_refresh_dagster.stores.selection import AccountSelector

    with DagsterInstance.get() as instance, operator_resources() as resources:
        plan = plan_cleanup(instance, AccountSelector(resources.mongo.db()))
        print("\n".join(plan.report()))
        if dry_run:
            print(f"dry run: {len(plan.keys)} partitions would be removed")
            return 0
        apply_cleanup(instance, plan)
    print(f"removed {len(plan.keys)} partitions")
    return 0


def _cap_report() -> int:
    from dagster import DagsterInstance

    from ig_refresh_dagster.refresh.housekeeping.partition_cap import (
        SETTING,
        AccountPartitionCap,
        plan_cap,
    )

    try:
        cap = AccountPartitionCap(max_partitions=settings.int_value(SETTING))
    except ValueError as exc:  # pydantic's ValidationError is one too
        print(f"ig-refresh partitions cap: {SETTING}: {exc}", file=sys.stderr)
        return 2
    with DagsterInstance.get() as instance, operator_resources() as resources:
        plan = plan_cap(instance, resources.mongo.refresh_log(), cap)
    print("\n".join(plan.report()))
    print("dry run: nothing evicted (account_partition_cap_sensor evicts)")
    return 0
