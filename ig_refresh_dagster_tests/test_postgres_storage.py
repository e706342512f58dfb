"""`deploy/dagster-postgres.yaml` against a real PostgreSQL: the production instance config loads,
migrates, and carries a sensor tick's partitions and a refresh run.

PostgreSQL is not embedded: this machine kind happens to run one on 127.0.0.1:5432, and the test
is skipped (saying why) where none answers. It creates and drops its own database.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster.partitions import instagram_accounts
from ig_refresh_dagster_tests.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    job_resources,
    run_refresh,
    seed_account,
)

psycopg2 = pytest.importorskip("psycopg2")


@pytest.fixture
def postgres_database() -> Iterator[str]:
    try:
        admin = psycopg2.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3
        )
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({exc})")
    admin.autocommit = True
    name = f"igrefresh_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_instance(
    tmp_path: Path, postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster-postgres.yaml", tmp_path / "dagster.yaml")
    for key, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": postgres_database,
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
    }.items():
        monkeypatch.setenv(key, value)
    instance = DagsterInstance.from_config(str(tmp_path))
    yield instance
    instance.dispose()


def test_refresh_run_on_postgres_storage(
    postgres_instance: DagsterInstance, mongo_db, mongo_uri, redis_url_for_test, httpserver
) -> None:
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
