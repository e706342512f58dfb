"""``ig-refresh``: the console script behind the README commands, one module per command group.

Each group module adds its parser with ``register`` and names the function that runs it; imports
of Dagster and the stores happen inside those functions, so ``ig-refresh --help`` stays quick.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ig_refresh_dagster.cli import backfill, dlq, health, partitions, retention, stack

GROUPS = (stack, health, dlq, retention, backfill, partitions)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ig-refresh", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passes_extra_args", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.run(args, parser, rest)
