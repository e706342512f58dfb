"""``ig-refresh health``: the health sidecar, which parses its own flags."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    health = sub.add_parser("health", help="health sidecar (/health, /ready)", add_help=False)
    health.set_defaults(run=_run, passes_extra_args=True)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, rest: list[str]) -> int:
    from ig_refresh_dagster.health.server import main as health_main

    return health_main(rest)
