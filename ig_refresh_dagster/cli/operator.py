"""The code location's resources for commands that run outside a Dagster run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def operator_resources() -> Iterator[Any]:
    """The code location's own resources, initialised outside a run (EnvVars resolved)."""
    from dagster import build_resources

    from ig_refresh_dagster.definitions import build_resources as location_resources

    resources = location_resources()
    with build_resources({k: resources[k] for k in ("mongo", "instagram")}) as initialised:
        yield initialised
