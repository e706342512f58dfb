"""The machine's PostgreSQL, when there is one: a fresh database per use, dropped afterwards.

PostgreSQL is not embedded: this machine kind happens to run one on 127.0.0.1:5432 (trust
auth, user postgres). Where none answers, the calling test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

psycopg2 = pytest.importorskip("psycopg2")

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    try:
        admin = psycopg2.connect(
            host=HOST, port=PORT, user=USER, dbname="postgres", connect_timeout=3
        )
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on {HOST}:{PORT} ({exc})")
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


def instance_env(database: str) -> dict[str, str]:
    """The variables `deploy/dagster-postgres.yaml` reads."""
    return {
        "DAGSTER_PG_HOST": HOST,
        "DAGSTER_PG_PORT": str(PORT),
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USER": USER,
        "DAGSTER_PG_PASSWORD": "",
    }


def count_event_rows(database: str, run_id: str) -> int:
    """Rows of one run in the `event_logs` table itself, DEBUG included."""
    conn = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname=database)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,))
            return int(cursor.fetchone()[0])
    finally:
        conn.close()
