"""What one run costs in Dagster's event log: rows, and bytes of their serialized events.

Read through the public instance API, so the same figure comes out of SQLite and PostgreSQL
storage: one ``EventLogEntry`` is one ``event_logs`` row, and the stored ``event`` column is
its ``serialize_value`` text (indexes and the other columns are not counted).
"""

from __future__ import annotations

import logging
from collections import Counter

from dagster import DagsterInstance, serialize_value
from pydantic import BaseModel


class EventLogFootprint(BaseModel):
    rows: int
    bytes: int
    by_kind: dict[str, int]


def run_footprint(instance: DagsterInstance, run_id: str) -> EventLogFootprint:
    entries = instance.all_logs(run_id)
    kinds = Counter(
        entry.dagster_event.event_type_value
        if entry.dagster_event
        else f"log line ({logging.getLevelName(entry.level)})"
        for entry in entries
    )
    return EventLogFootprint(
        rows=len(entries),
        bytes=sum(len(serialize_value(entry)) for entry in entries),
        by_kind=dict(kinds.most_common()),
    )
