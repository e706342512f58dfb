"""``ig-refresh``: the console script behind the README commands and the health sidecar."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ig-refresh", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="embedded stack + Dagster UI (:3000) + daemon + health (:3053)")
    demo = sub.add_parser("demo", help="process the demo queue, print a summary, exit")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for runs")
    sub.add_parser("health", help="health sidecar (/health, /ready)", add_help=False)
    retention = sub.add_parser(
        "retention", help="delete old finished Dagster runs; archive gone accounts' partitions"
    )
    retention.add_argument("--older-than-days", type=int, help="default: $RUN_RETENTION_DAYS or 30")
    retention.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    retention.add_argument("--max-runs", type=int, default=100_000, help="runs per pass")
    args, rest = parser.parse_known_args(argv)
    if args.command == "health":
        from ig_refresh_dagster.health.server import main as health_main

        return health_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "retention":
        from ig_refresh_dagster.refresh.retention import retention_command

        return retention_command(args.older_than_days, args.dry_run, args.max_runs)
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


if __name__ == "__main__":
    sys.exit(main())
