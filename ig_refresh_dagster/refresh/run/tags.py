"""The run tags the project sets, and what they say about who asked for a refresh.

Tags stay short and never repeat Dagster's own (``dagster/partition`` already holds the account
id). ``ig-refresh/source`` names the automatic path that requested a run; a run without it was
launched by hand (Materialize, a UI backfill, a re-execution), which is how the minimum-interval
guard and the budget share tell operators' runs from background traffic. Requests get their
tags from ``launch/requests.py``.
"""

from collections.abc import Mapping
from enum import StrEnum

PREFIX = "ig-refresh"
HANDLE = f"{PREFIX}/handle"
SOURCE = f"{PREFIX}/source"
FORCE = f"{PREFIX}/force"
SKIPPED = f"{PREFIX}/skipped"
# On a deferral's retry run: the run id of the run that deferred.
RETRY_OF = f"{PREFIX}/retry-of"

PRIORITY = "dagster/priority"
# Event runs keep Dagster's default priority (0); the queue starts higher numbers first.
BACKGROUND_PRIORITY = "-1"

_BACKFILL = "dagster/backfill"
_PARENT_RUN = "dagster/parent_run_id"
_RETRY_NUMBER = "dagster/retry_number"


class Source(StrEnum):
    EVENT = "event"
    FRESHNESS = "freshness"
    BACKFILL = "backfill"


def handle_tag(handle: str | None) -> dict[str, str]:
    return {HANDLE: handle} if handle else {}


def is_background(tags: Mapping[str, str]) -> bool:
    """Runs that may use only the backfill share of each hourly budget: the freshness
    sensor's, backfills by query, and any Dagster backfill (including one launched in the UI,
    so a large UI backfill cannot starve event-driven refreshes either)."""
    return tags.get(SOURCE) in (Source.FRESHNESS, Source.BACKFILL) or _BACKFILL in tags


def is_operator_launch(tags: Mapping[str, str]) -> bool:
    """An explicit operator materialization: forced, launched without a source (Materialize,
    a UI backfill), or re-executed by hand (a parent run but no automatic-retry number)."""
    if tags.get(FORCE) == "true" or SOURCE not in tags:
        return True
    return _PARENT_RUN in tags and _RETRY_NUMBER not in tags
