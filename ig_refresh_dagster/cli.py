"""``ig-refresh``: the console script behind the README commands, the health sidecar, and the
dead-letter tools (``dlq list``, ``dlq replay``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ig_refresh_dagster import settings
from ig_refresh_dagster.cli_backfill import add_report_commands

if TYPE_CHECKING:
    from ig_refresh_dagster.intake.dead_letter_log import DeadLetterSummary
    from ig_refresh_dagster.intake.replay import ReplayReport


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ig-refresh", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="embedded stack + Dagster UI (:3000) + daemon + health (:3053)")
    demo = sub.add_parser("demo", help="process the demo queue, print a summary, exit")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for runs")
    sub.add_parser("health", help="health sidecar (/health, /ready)", add_help=False)
    _dlq_parser(sub.add_parser("dlq", help="summarise or replay the dead-letter topic"))
    retention = sub.add_parser(
        "retention", help="delete old finished Dagster runs; archive gone accounts' partitions"
    )
    retention.add_argument("--older-than-days", type=int, help="default: $RUN_RETENTION_DAYS or 30")
    retention.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    retention.add_argument("--max-runs", type=int, default=100_000, help="runs per pass")
    _add_backfill(sub)
    partitions = sub.add_parser("partitions", help="manage the instagram_accounts partitions")
    partition_actions = partitions.add_subparsers(dest="action", required=True)
    cleanup = partition_actions.add_parser(
        "cleanup", help="remove keys that are not account ids or whose Account no longer exists"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    partition_actions.add_parser(
        "cap",
        help="dry run of account_partition_cap_sensor: which keys it would evict, and why",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "health":
        from ig_refresh_dagster.health.server import main as health_main

        return health_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "dlq":
        return _dlq(args, parser)
    if args.command == "retention":
        from ig_refresh_dagster.refresh.retention import retention_command

        return retention_command(args.older_than_days, args.dry_run, args.max_runs)
    if args.command == "backfill":
        if args.action:
            from ig_refresh_dagster.cli_backfill import run_report_command

            return run_report_command(args, _operator_resources)
        return _backfill(args)
    if args.command == "partitions":
        return _cap_report() if args.action == "cap" else _cleanup_partitions(args.dry_run)
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


def _time(raw: str) -> datetime:
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {raw!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _position(raw: str) -> tuple[int, int]:
    partition, _, offset = raw.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise argparse.ArgumentTypeError(f"expected PARTITION:OFFSET, got {raw!r}")
    return int(partition), int(offset)


def _dlq_parser(dlq: argparse.ArgumentParser) -> None:
    actions = dlq.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="dead letters by reason: counts, oldest, newest")
    replay = actions.add_parser(
        "replay", help="re-publish selected originals to the refresh topic (idempotent)"
    )
    for action in (listing, replay):
        action.add_argument("--json", action="store_true", help="print the typed model as JSON")
        action.add_argument("--limit", type=int, default=100_000, help="dead letters to read")
    replay.add_argument("--reason", action="append", default=[], help="repeatable")
    replay.add_argument(
        "--source-offset",
        action="append",
        default=[],
        type=_position,
        metavar="PARTITION:OFFSET",
        help="position of the original in the refresh topic; repeatable",
    )
    replay.add_argument("--since", type=_time, help="dead-lettered at or after (ISO time)")
    replay.add_argument("--until", type=_time, help="dead-lettered before (ISO time)")
    replay.add_argument("--all", action="store_true", help="every dead letter (no filter)")
    replay.add_argument("--dry-run", action="store_true", help="show, publish nothing")


def _dlq(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ig_refresh_dagster.intake.connection import KafkaConnection
    from ig_refresh_dagster.intake.dead_letter_log import (
        DeadLetterTopicMissing,
        ReplaySelection,
        read_dead_letters,
        summarise,
    )
    from ig_refresh_dagster.intake.replay import ReplayError, replay

    # The same TLS/SASL settings as the sensor and the sidecar.
    connection = KafkaConnection.from_settings()
    if connection is None:
        print("KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 2
    selection = None
    if args.action == "replay":
        selection = ReplaySelection(
            reasons=set(args.reason),
            source_offsets=set(args.source_offset),
            since=args.since,
            until=args.until,
        )
        if selection == ReplaySelection() and not args.all:
            parser.error(
                "dlq replay needs a filter (--reason, --source-offset, --since, --until) or --all"
            )
    dlq_topic = settings.value("INSTAGRAM_REFRESH_DLQ_TOPIC")
    try:
        records = read_dead_letters(connection, dlq_topic, args.limit)
        if selection is None:
            report = summarise(dlq_topic, records)
            text = _summary_text(report)
        else:
            target = settings.value("INSTAGRAM_REFRESH_TOPIC")
            report = replay(connection, records, selection, target, args.dry_run)
            text = _replay_text(report)
    except (DeadLetterTopicMissing, ReplayError) as exc:
        print(f"ig-refresh dlq {args.action}: {exc}", file=sys.stderr)
        return 1
    print(report.model_dump_json(indent=2) if args.json else text)
    return 0


def _when(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    minutes = int((now - at).total_seconds() // 60)
    age = (
        f"{minutes // 1440}d {minutes // 60 % 24}h"
        if minutes >= 1440
        else (f"{minutes // 60}h {minutes % 60}m")
    )
    return f"{at.isoformat(timespec='seconds')} ({age} ago)"


def _summary_text(summary: DeadLetterSummary) -> str:
    now = datetime.now(UTC)
    lines = [
        f"dead-letter topic {summary.topic}: {summary.total} message(s); "
        f"oldest {_when(summary.oldest, now)}, newest {_when(summary.newest, now)}"
    ]
    if summary.reasons:
        lines.append(f"{'reason':<22} {'count':>7}  {'oldest':<42} newest")
        for row in summary.reasons:
            lines.append(
                f"{row.reason:<22} {row.count:>7}  {_when(row.oldest, now):<42} "
                f"{_when(row.newest, now)}"
            )
    return "\n".join(lines)


def _replay_text(report: ReplayReport) -> str:
    verb = "would replay" if report.dry_run else "replayed"
    lines = [
        f"{report.selected} selected, {verb} "
        f"{sum(i.outcome != 'skipped: truncated' for i in report.items)} to {report.target_topic}"
        + (" (dry run: nothing published)" if report.dry_run else "")
    ]
    lines += [f"  {i.dead_letter}  from {i.source}  {i.reason}: {i.outcome}" for i in report.items]
    return "\n".join(lines)


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
    add_report_commands(backfill)


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


def _cap_report() -> int:
    from dagster import DagsterInstance

    from ig_refresh_dagster.refresh.partition_cap import SETTING, AccountPartitionCap, plan_cap

    try:
        cap = AccountPartitionCap(max_partitions=settings.int_value(SETTING))
    except ValueError as exc:  # pydantic's ValidationError is one too
        print(f"ig-refresh partitions cap: {SETTING}: {exc}", file=sys.stderr)
        return 2
    with DagsterInstance.get() as instance, _operator_resources() as resources:
        plan = plan_cap(instance, resources.mongo.refresh_log(), cap)
    print("\n".join(plan.report()))
    print("dry run: nothing evicted (account_partition_cap_sensor evicts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
