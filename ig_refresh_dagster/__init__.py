"""Dagster pipeline that keeps Instagram creator profiles fresh.

``defs`` is loaded on first access, so the health sidecar, the dev stack and the plain-Python
stores can be imported without paying for Dagster's import.
"""

from typing import Any

__all__ = ["defs"]


def __getattr__(name: str) -> Any:
    if name == "defs":
        from ig_refresh_dagster.definitions import defs

        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
