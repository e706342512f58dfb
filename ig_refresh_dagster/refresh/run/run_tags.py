"""Tagging the current run with how it ended, so the Runs page can filter on it.

Adapter around one non-public call, kept in this module on purpose: Dagster has no public API
to add a tag to a run once it has been launched (dagster-io/dagster#27502, open), and a run's
outcome (for example a deferral) is only known while it runs. ``DagsterInstance.add_run_tags``
is the call Dagster's own daemons use for the same purpose (``dagster/will_retry`` on failed
runs, the run launcher's tags).
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import OpExecutionContext


def tag_current_run(context: OpExecutionContext, tags: Mapping[str, str]) -> None:
    context.instance.add_run_tags(context.run_id, dict(tags))
