"""What one refresh run leaves in Dagster's event log with the repository's own dagster.yaml
(docs/production.md, "Bounded storage"): a count of rows, DEBUG included, not a time.

The refresh runs in process against a temporary SQLite instance configured by dagster.yaml;
a daemon-launched run adds its queue and launch events on top (checked on PostgreSQL in
test_production_topology.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dagster import DagsterInstance
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.devstack.event_log import run_footprint
from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    job_resources,
    run_refresh,
    seed_account,
)

# Measured: 26 rows, 31 KiB (84 rows, 119 KiB with seven steps; 106 rows before dagster.yaml
# dropped DEBUG log lines). The run's own start/end, one step, the materialization, the four
# asset checks planned and the three evaluated (account_identity only when an answer is refused)
# are 22 of them; the stages log three lines, and Dagster one saying account_identity was not
# yielded (cheaper than evaluating it on every run: 3 rows).
MAX_ROWS_IN_PROCESS = 26


def test_a_refresh_writes_no_debug_lines_and_a_bounded_number_of_rows(
    tmp_path: Path, mongo_db, mongo_uri, redis_url_for_test, redis_client, httpserver: HTTPServer
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(graph_body("natgeo"))
    resources = job_resources(
        mongo_uri, redis_url_for_test, httpserver.url_for("/v21.0"), httpserver.url_for("")
    )
    account_id = seed_account(mongo_db, handle="natgeo", accountId="natgeo-cache")
    with DagsterInstance.from_config(str(home)) as instance:
        result = run_refresh(account_id, resources, instance)
        assert result.success
        footprint = run_footprint(instance, result.run_id)

    assert "log line (DEBUG)" not in footprint.by_kind, footprint.by_kind
    assert footprint.rows <= MAX_ROWS_IN_PROCESS, footprint.by_kind
    assert footprint.by_kind["STEP_START"] == 1, footprint.by_kind
