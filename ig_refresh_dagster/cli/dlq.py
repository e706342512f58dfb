"""``ig-refresh dlq list`` and ``dlq replay``: the dead-letter topic, summarised or replayed."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ig_refresh_dagster import settings

if TYPE_CHECKING:
    from ig_refresh_dagster.intake.dead_letter_log import DeadLetterSummary
    from ig_refresh_dagster.intake.replay import ReplayReport


def register(sub: Any) -> None:
    _dlq_parser(sub.add_parser("dlq", help="summarise or replay the dead-letter topic"))


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
    dlq.set_defaults(run=_dlq)
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


def _dlq(args: argparse.Namespace, parser: argparse.ArgumentParser, rest: list[str]) -> int:
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
