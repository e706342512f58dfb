"""`deploy/dagster-postgres.yaml` against a real PostgreSQL: the production instance config loads,
migrates, and carries a sensor tick's partitions and a refresh run.

PostgreSQL is not embedded (see postgres_helpers): skipped, saying why, where none answers. The
test creates and drops its own database.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster_tests.support.postgres_helpers import fresh_database, instance_env
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    job_resources,
    run_refresh,
    seed_account,
)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    with fresh_database() as name:
        yield name


@pytest.fixture
def postgres_instance(
    tmp_path: Path, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster-postgres.yaml", tmp_path / "dagster.yaml")
    for key, value in instance_env(postgres_database).items():
        monkeypatch.setenv(key, value)
    # Entered, so loading definitions reads this instance's state, not one an earlier test
    # left behind in Dagster's context variable.
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


def test_refresh_run_on_postgres_storage(
    postgres_instance: DagsterInstance,
    mongo_db,
    mongo_uri,
    redis_url_for_test,
    redis_client,
    httpserver,
) -> None:
    """``redis_client`` empties Redis first: an earlier test's Graph pause must not apply."""
    assert type(postgres_instance.run_storage).__name__ == "PostgresRunStorage"
    account_id = seed_account(mongo_db, handle="natgeo")
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(graph_body("natgeo"))
    resources = job_resources(
        mongo_uri, redis_url_for_test, httpserver.url_for("/v21.0"), httpserver.url_for("")
    )
    result = run_refresh(account_id, resources, postgres_instance)
    assert result.success
    assert postgres_instance.get_dynamic_partitions(instagram_accounts.name) == [account_id]
    run = postgres_instance.get_run_by_id(result.run_id)
    assert run.tags["dagster/partition"] == account_id


def test_connection_parameters_reach_postgresql(postgres_instance: DagsterInstance) -> None:
    """The `params` of dagster-postgres.yaml (sslmode, connect_timeout, application_name) are
    what the instance's storage connects with, as PostgreSQL itself reports."""
    import sqlalchemy as db

    with postgres_instance.run_storage.connect() as conn:
        name = conn.execute(db.text("SELECT current_setting('application_name')")).scalar()
    assert name == "ig-refresh-dagster"
