"""Per-duckling catalog credentials: a registry entry names its own ``ducklake`` connection (from the metadata
DB, environment variables or any secrets backend) holding a login that only that catalog accepts. The shared
``ducklake_default`` login is the other, explicit choice."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from tests.support.runs import logged_text, run
from tests.support.stack import DAYS

TEAM = 294
LOGIN, PASSWORD = "team294_catalog", "team294-catalog-pw-Secret5521"


@pytest.fixture(scope="module")
def events(stack) -> int:
    from airflow_provider_duckling.demo.sample_data import insert_events
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

    insert_events(ClickHouseHook(), TEAM, DAYS[0], 321)
    return 321


@pytest.fixture(autouse=True)
def _registry_restored(stack):
    """The team's connection goes with each test (monkeypatch), so its registry entry must too: a later test
    in this process (the maintenance DAG maps over every entry) must not meet an entry without its connection."""
    previous = list(stack.ducklings.values())
    yield
    stack.use(*previous)


def _per_team_catalog(stack, monkeypatch, password: str):
    duckling = stack.new_duckling(TEAM, "own-login")
    stack.postgres.psql(f"DROP ROLE IF EXISTS {LOGIN}")  # constants of this test, not input
    stack.postgres.psql(f"CREATE ROLE {LOGIN} LOGIN NOSUPERUSER PASSWORD '{PASSWORD}'")
    stack.postgres.psql(f'ALTER DATABASE "{duckling.db_name}" OWNER TO {LOGIN}')
    stack.postgres.psql(f'REVOKE CONNECT ON DATABASE "{duckling.db_name}" FROM PUBLIC')
    conn = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_TEAM_294", json.dumps({**conn, "login": LOGIN, "password": password}))
    duckling = dataclasses.replace(duckling, catalog_conn_id="ducklake_team_294")
    stack.use(duckling)
    return duckling


def test_a_duckling_registers_with_its_own_catalog_login(stack, events, monkeypatch):
    import psycopg2

    duckling = _per_team_catalog(stack, monkeypatch, PASSWORD)

    assert run(TEAM, DAYS[0]).state == "success"

    conn = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user=LOGIN, password=PASSWORD,
                            dbname=duckling.db_name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'ducklake_snapshot'")
            assert cur.fetchall() == [(LOGIN,)]  # the catalog was created by the team's own login
            cur.execute("SELECT table_name, sum(record_count) FROM ducklake_data_file JOIN ducklake_table USING (table_id) "
                        "WHERE ducklake_data_file.end_snapshot IS NULL GROUP BY 1")
            assert cur.fetchall() == [("events", events)]
    finally:
        conn.close()


def test_the_entrys_connection_is_the_one_used(stack, monkeypatch, caplog, capfd):
    """A wrong password in the team's connection fails the run, though the shared login would have worked."""
    duckling = _per_team_catalog(stack, monkeypatch, "not-the-password-Secret0")
    before = stack.keys(duckling.bucket)

    assert run(TEAM, DAYS[1]).state == "failed"

    text = logged_text(caplog, capfd)
    assert f'failed for user "{LOGIN}"' in text
    assert "not-the-password-Secret0" not in text
    assert stack.keys(duckling.bucket) == before  # the catalog check precedes the export
