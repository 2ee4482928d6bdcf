"""The customer's reader: which DuckLake format our lakes are written in, and what the tasks do with a catalog a
newer DuckDB upgraded (docs/compatibility.md).

DuckDB 1.5.5 writes DuckLake 1.0 into a new catalog, PostgreSQL or DuckDB file, and attaches no other format. A
catalog at any other version is refused before anything is written, with one line naming both versions and what
to do; through the generated DAGs, no Parquet object is written and no snapshot is added. Real engines throughout:
DuckDB with DuckLake, and (stack tests) PostgreSQL catalogs, moto S3 and ClickHouse (chdb over HTTP).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import duckdb
import psycopg2
import pytest

from airflow_provider_duckling.access.lake_metadata import (
    KNOWN_VERSIONS,
    WRITTEN_VERSION,
    CatalogVersionRefused,
    check_version,
    version_key,
    version_refusal,
)
from airflow_provider_duckling.common.errors import CatalogVersionError, ConfigurationError
from airflow_provider_duckling.domain.tables import EVENTS, LAKE_SCHEMA
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.transfer.lake import ensure_table
from tests.conftest import SESSION_DIR
from tests.support.embedded_lake import embedded_duckling
from tests.support.runs import logged_text, run
from tests.support.stack import BASE_AWS_SECRET, CATALOG_PASSWORD, CLICKHOUSE_PASSWORD, DAYS

DOC = Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"
NEWER = "1.1"  # DuckLake 1.1: DuckDB 2.0's format
OLDER = "0.4"  # DuckLake 0.4: DuckDB 1.5.0 and 1.5.1's format


def newer_line(whose: str) -> str:
    """The exact line a task fails with on a catalog a newer DuckDB upgraded to DuckLake 1.1."""
    return (f"{whose} is DuckLake 1.1 (written by a newer DuckDB); this provider's DuckDB 1.5.5 understands "
            "DuckLake 1.0 at most: upgrade airflow-provider-duckling to a release whose DuckDB reads DuckLake 1.1 "
            "(see docs/compatibility.md); nothing was written")


# ---------------------------------------------------------------- versions, compared as numbers


@pytest.mark.quick
def test_versions_compare_as_numbers_not_as_text():
    assert version_key("0.10") > version_key("0.9") and "0.10" < "0.9"
    assert version_key("1.1") > version_key("1.0") > version_key("0.4") > version_key("0.4-dev1") > version_key("0.3")
    assert version_key("0.3-dev2") > version_key("0.3-dev1")
    assert version_key("1.0") == version_key("1.0.0") == version_key(" 1.0 ")
    assert version_key("2.0") > version_key("1.99")
    for junk in ("", "1", "one.zero", "1.0; DROP TABLE x", "1.0-rc1", "9" * 20 + ".0"):
        assert version_key(junk) is None, junk


@pytest.mark.quick
def test_only_the_version_we_write_passes():
    assert WRITTEN_VERSION == "1.0" and KNOWN_VERSIONS == {"1.0"}
    check_version("1.0")
    check_version("1.0.0")
    check_version(None)  # no version recorded: DuckDB decides, as before
    for other in (NEWER, "9.9", "0.10", OLDER, "0.3", "0.4-dev1", "garbage"):
        with pytest.raises(CatalogVersionRefused) as refused:
            check_version(other)
        assert refused.value.version == other


@pytest.mark.quick
def test_each_refusal_is_one_line_naming_both_versions_and_what_to_do():
    whose = "duckling 7's catalog (lake_7 on db.internal)"
    newer = version_refusal(whose, NEWER)
    assert newer == newer_line(whose)
    older = version_refusal(whose, OLDER)
    assert older.startswith(f"{whose} is DuckLake 0.4 (written by an older DuckDB); this provider's DuckDB 1.5.5 "
                            "writes DuckLake 1.0")
    assert "AUTOMATIC_MIGRATION TRUE" in older and older.endswith("nothing was written")
    assert version_refusal(whose, "1.10").startswith(f"{whose} is DuckLake 1.10 (written by a newer DuckDB)")
    assert version_refusal(whose, "0.10").startswith(f"{whose} is DuckLake 0.10 (written by an older DuckDB)")
    hostile = "x" * 5000 + "\nsecond line"
    odd = version_refusal(whose, hostile)
    assert "which is not a DuckLake version" in odd and "DuckLake 1.0" in odd and len(odd) < 400
    for line in (newer, older, odd):
        assert "\n" not in line and "nothing was written" in line


# ---------------------------------------------------------------- the embedded (DuckDB-file) catalog


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """An embedded-lake connection (``ducklake_cv``) and a duckling of team 7 on it."""
    return embedded_duckling(tmp_path, monkeypatch, "cv")


def file_metadata(catalog: Path) -> dict[str, str]:
    con = duckdb.connect(str(catalog), read_only=True)
    try:
        return dict(con.execute("SELECT key, value FROM ducklake_metadata WHERE scope IS NULL").fetchall())
    finally:
        con.close()


def set_file_version(catalog: Path, version: str) -> None:
    con = duckdb.connect(str(catalog))
    try:
        con.execute(f"UPDATE ducklake_metadata SET value = '{version}' WHERE key = 'version' AND scope IS NULL")
    finally:
        con.close()


def test_a_new_embedded_lake_is_written_at_the_documented_version(embedded):
    hook, duckling, catalog = embedded
    assert duckdb.__version__ == "1.5.5"
    with hook.attach(duckling) as con:
        ensure_table(con, EVENTS)
    metadata = file_metadata(catalog)
    assert metadata["version"] == WRITTEN_VERSION == "1.0"
    assert metadata["created_by"].startswith("DuckDB ")
    facts = hook.read_catalog(duckling, hook.storage(duckling), LAKE_SCHEMA, "events")
    assert facts is not None and facts.initialised and facts.columns  # our own format reads as before
    assert "DuckLake 1.0" in DOC.read_text() and "DuckDB 1.5.5" in DOC.read_text()


@pytest.mark.parametrize("version", [NEWER, OLDER])
def test_an_embedded_catalog_of_another_version_is_refused_and_not_touched(embedded, version):
    hook, duckling, catalog = embedded
    with hook.attach(duckling) as con:
        ensure_table(con, EVENTS)
    set_file_version(catalog, version)
    before = catalog.read_bytes()
    whose = "duckling 7's catalog (cv_lake on localhost)"
    with pytest.raises(CatalogVersionError) as read:  # the export's pre-flight read
        hook.read_catalog(duckling, hook.storage(duckling), LAKE_SCHEMA, "events")
    with pytest.raises(CatalogVersionError) as attached:  # the register task's (and maintenance's) attach
        with hook.attach(duckling):
            pass
    assert str(read.value) == str(attached.value) == version_refusal(whose, version)
    assert isinstance(read.value, ConfigurationError)  # permanent: the tasks do not retry it
    assert catalog.read_bytes() == before  # neither wrote a byte
    assert file_metadata(catalog)["version"] == version


def test_duckdb_itself_refuses_a_newer_catalog_with_a_misleading_hint(embedded):
    """What DuckDB 1.5.5 says without our check (recorded in docs/compatibility.md): it suggests a migration,
    and following the suggestion fails too. That is why the tasks say it themselves."""
    from airflow_provider_duckling.access.extensions import connect_duckdb

    hook, duckling, catalog = embedded
    with hook.attach(duckling) as con:
        ensure_table(con, EVENTS)
    set_file_version(catalog, NEWER)
    con = connect_duckdb(("ducklake",))
    try:
        target = f"ducklake:{catalog}"
        with pytest.raises(duckdb.InvalidInputException) as plain:
            con.execute(f"ATTACH '{target}' AS lake (DATA_PATH '{catalog.parent}/')")
        assert str(plain.value) == (
            "Invalid Input Error: DuckLake catalog version mismatch: catalog version is 1.1, but the extension "
            "requires version 1.0. To automatically migrate, set AUTOMATIC_MIGRATION to TRUE when attaching.")
        with pytest.raises(duckdb.NotImplementedException) as migrate:
            con.execute(f"ATTACH '{target}' AS lake (DATA_PATH '{catalog.parent}/', AUTOMATIC_MIGRATION TRUE)")
        assert str(migrate.value) == ("Not implemented Error: Only DuckLake versions 0.1, 0.2, 0.3-dev1, 0.3, "
                                      "0.4-dev1, 0.4, 1.0 are supported")
    finally:
        con.close()
    assert file_metadata(catalog)["version"] == NEWER


# ---------------------------------------------------------------- through the DAGs, on the real stack


def pg_rows(stack, duckling: Duckling, sql: str) -> list[tuple]:
    conn = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user=stack.postgres.user,
                            password=stack.postgres.password, dbname=duckling.db_name)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def lake_counts(rows) -> tuple[int, int]:
    """(snapshots, data files) of a catalog, from a function running one SQL statement on it."""
    return rows("SELECT count(*) FROM ducklake_snapshot")[0][0], rows("SELECT count(*) FROM ducklake_data_file")[0][0]


def failure_line(caplog, capfd) -> tuple[str, str]:
    """The task-failure line of the run, and everything logged."""
    text = logged_text(caplog, capfd)
    lines = [line for line in text.splitlines() if "event=task_failed" in line]
    assert lines, text[-3000:]
    return lines[0], text


def assert_refused(line: str, text: str, whose: str, duckling: Duckling) -> None:
    assert "retryable=false reason=CatalogVersionError: " + newer_line(whose) in line
    for secret in (CATALOG_PASSWORD, CLICKHOUSE_PASSWORD, BASE_AWS_SECRET, duckling.cross_account_external_id):
        assert secret not in text
    assert "AUTOMATIC_MIGRATION" not in line  # DuckDB's own (misleading) hint is not what the task says


def test_a_postgres_catalog_a_newer_duckdb_upgraded_is_refused_before_anything_is_written(stack, caplog, capfd):
    duckling = stack.new_duckling(1, "catver-pg")
    stack.use(duckling)
    assert run(1, DAYS[0]).state == "success"
    assert pg_rows(stack, duckling, "SELECT value FROM ducklake_metadata WHERE key = 'version' AND scope IS NULL") \
        == [(WRITTEN_VERSION,)]

    pg_rows(stack, duckling, f"UPDATE ducklake_metadata SET value = '{NEWER}' WHERE key = 'version' AND scope IS NULL")
    keys = stack.keys(duckling.bucket)
    counts = lake_counts(lambda sql: pg_rows(stack, duckling, sql))
    capfd.readouterr()
    caplog.clear()
    whose = f"duckling 1's catalog ({duckling.db_name} on 127.0.0.1)"
    for options in ({}, {"delete_tables": True}, {"skip_schema_validation": True}):  # the last two skip the schema check
        assert run(1, DAYS[1], **options).state == "failed", options
        line, text = failure_line(caplog, capfd)
        assert_refused(line, text, whose, duckling)
        caplog.clear()
        assert stack.keys(duckling.bucket) == keys, options  # no Parquet object written
        assert lake_counts(lambda sql: pg_rows(stack, duckling, sql)) == counts, options  # no snapshot, no file
    with pytest.raises(CatalogVersionError, match=re.escape(newer_line(whose))):  # the register task's attach
        with DuckLakeHook().attach(duckling):
            pass
    assert lake_counts(lambda sql: pg_rows(stack, duckling, sql)) == counts
    assert pg_rows(stack, duckling, "SELECT value FROM ducklake_metadata WHERE key = 'version' AND scope IS NULL") \
        == [(NEWER,)]


def test_an_embedded_catalog_a_newer_duckdb_upgraded_is_refused_before_anything_is_written(stack, monkeypatch,
                                                                                           caplog, capfd):
    root = SESSION_DIR / "catalog-version-lakes"
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_CV_LOCAL",
                       json.dumps({"conn_type": "ducklake", "extra": {"local_root": str(root)}}))
    duckling = dataclasses.replace(stack.new_duckling(2, "catver-local"), catalog_conn_id="ducklake_cv_local")
    stack.use(duckling)
    assert run(2, DAYS[0]).state == "success"
    catalog = root / f"{duckling.db_name}.ducklake"
    assert file_metadata(catalog)["version"] == WRITTEN_VERSION

    set_file_version(catalog, NEWER)
    files = sorted((root / duckling.bucket).rglob("*.parquet"))
    assert files

    def file_rows(sql: str) -> list[tuple]:
        con = duckdb.connect(str(catalog), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    counts = lake_counts(file_rows)
    capfd.readouterr()
    caplog.clear()
    assert run(2, DAYS[1]).state == "failed"
    line, text = failure_line(caplog, capfd)
    assert_refused(line, text, f"duckling 2's catalog ({duckling.db_name} on 127.0.0.1)", duckling)
    assert sorted((root / duckling.bucket).rglob("*.parquet")) == files  # no Parquet file written
    assert lake_counts(file_rows) == counts and file_metadata(catalog)["version"] == NEWER
