"""The export task's pre-flight reads the lake's columns straight from DuckLake's metadata tables (no DuckLake
attach), agrees with what DuckDB itself reports, checks ownership without writing, falls back to an attach
for what it cannot describe, and runs alongside the row count."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading

import duckdb
import pytest

from airflow_provider_duckling.access.lake_metadata import duckdb_type
from airflow_provider_duckling.common.errors import (
    CatalogVersionError,
    ConfigurationError,
    LakeUnavailableError,
)
from airflow_provider_duckling.domain.tables import EVENTS, LAKE_SCHEMA, PERSONS, TableSpec
from airflow_provider_duckling.hooks.ducklake import LAKE_ALIAS, DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.transfer.lake import ensure_table, normalize_type, table_columns
from tests.support.embedded_lake import embedded_duckling

PRIMITIVES = [
    "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
    "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL(18,3)", "DECIMAL(38,10)", "DATE", "TIME", "TIMETZ",
    "TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "INTERVAL", "VARCHAR", "BLOB",
    "UUID", "JSON",
]


def duckdbs_own_answer(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """What DuckDB (through DuckLake) reports for ``posthog.table``."""
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
        "AND table_name = ? ORDER BY column_index", [LAKE_ALIAS, LAKE_SCHEMA, table],
    ).fetchall()
    return {name: normalize_type(kind) for name, kind in rows}


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """An embedded-lake connection (``ducklake_pf``) and a duckling of team 7 on it."""
    return embedded_duckling(tmp_path, monkeypatch, "pf")


def _read(hook: DuckLakeHook, duckling: Duckling, table: str):
    return hook.read_catalog(duckling, hook.storage(duckling), LAKE_SCHEMA, table)


def test_every_primitive_type_reads_as_duckdb_reports_it_and_dropped_things_are_gone(embedded):
    hook, duckling, _ = embedded
    columns = ", ".join(f"c{i} {kind}" for i, kind in enumerate(PRIMITIVES))
    with hook.attach(duckling) as con:
        for table in (EVENTS, PERSONS):
            ensure_table(con, table)
        con.execute(f"CREATE TABLE lake.posthog.every_type ({columns})")
        con.execute("CREATE TABLE lake.posthog.dropped (a INTEGER)")
        con.execute("DROP TABLE lake.posthog.dropped")
        con.execute("ALTER TABLE lake.posthog.events DROP COLUMN elements_chain")
        con.execute("ALTER TABLE lake.posthog.events ADD COLUMN customer_note VARCHAR")
        expected = {name: duckdbs_own_answer(con, name) for name in ("events", "persons", "every_type")}
        attached = {name: table_columns(con, TableSpec(name, (), "")) for name in expected}  # the register task's read
    assert len(expected["every_type"]) == len(PRIMITIVES)
    for name, columns_seen in expected.items():
        facts = _read(hook, duckling, name)
        assert facts is not None and facts.initialised
        assert facts.columns == columns_seen, name  # same names, same order, same types
        assert attached[name] == columns_seen, name
    assert "elements_chain" not in expected["events"] and list(expected["events"])[-1] == "customer_note"
    assert _read(hook, duckling, "dropped").columns == {}
    assert _read(hook, duckling, "no_such_table").columns == {}


def test_a_nested_column_is_left_to_duckdb(embedded):
    hook, duckling, _ = embedded
    with hook.attach(duckling) as con:
        ensure_table(con, EVENTS)
        con.execute("ALTER TABLE lake.posthog.events ADD COLUMN tags VARCHAR[]")
        expected = duckdbs_own_answer(con, "events")
        assert table_columns(con, EVENTS) == expected  # the attached read falls back to DuckDB
    assert expected["tags"] == "VARCHAR[]"
    assert _read(hook, duckling, "events") is None  # the pre-flight then attaches
    assert duckdb_type("list") is None and duckdb_type("struct") is None and duckdb_type("map") is None


def test_a_new_lake_reads_as_not_initialised_and_nothing_is_created(embedded):
    hook, duckling, catalog = embedded
    facts = _read(hook, duckling, "events")
    assert facts is not None and not facts.initialised and facts.columns == {}
    assert not catalog.exists()


def test_another_catalog_format_is_refused_not_left_to_duckdb(embedded):
    """DuckDB 1.5.5 attaches only its own DuckLake format: the read refuses any other at once
    (tests/test_catalog_version.py has the rest)."""
    hook, duckling, catalog = embedded
    with hook.attach(duckling) as con:
        ensure_table(con, EVENTS)
    raw = duckdb.connect(str(catalog))
    raw.execute("UPDATE ducklake_metadata SET value = '9.9' WHERE key = 'version' AND scope IS NULL")
    raw.close()
    with pytest.raises(CatalogVersionError, match="is DuckLake 9.9 "):
        _read(hook, duckling, "events")


def test_another_teams_catalog_is_refused_and_not_claimed(embedded):
    hook, duckling, catalog = embedded
    with hook.attach(duckling) as con:  # first use: team 7 claims it
        ensure_table(con, EVENTS)
    before = catalog.read_bytes()
    with pytest.raises(ConfigurationError, match="belongs to team 7, not to team 8"):
        _read(hook, dataclasses.replace(duckling, team_id=8), "events")
    other_bucket = dataclasses.replace(duckling, bucket="pf-other-bucket")
    with pytest.raises(ConfigurationError, match="belongs to another duckling"):
        _read(hook, other_bucket, "events")
    assert catalog.read_bytes() == before  # read-only: not a byte written


def test_a_locked_catalog_is_a_transient_error(embedded):
    hook, duckling, catalog = embedded
    with hook.attach(duckling) as con:
        ensure_table(con, EVENTS)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(catalog)!r}); print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"  # another process writes to the catalog file
        with pytest.raises(LakeUnavailableError, match="cannot reach the duckling catalog of team 7"):
            _read(hook, duckling, "events")
    finally:
        holder.communicate("")


def test_the_embedded_read_imports_no_dataframe_library(embedded):
    """Binding a Python value in DuckDB's client imports pandas (about 0.2 s): the read binds none."""
    hook, duckling, catalog = embedded
    with hook.attach(duckling) as con:
        ensure_table(con, EVENTS)
    script = (
        "import sys\n"
        "from airflow_provider_duckling.access.lake_metadata import read_embedded\n"
        f"facts = read_embedded(__import__('pathlib').Path({str(catalog)!r}), 'posthog', 'events', 'owner')\n"
        "assert facts.columns, facts\n"
        "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_postgresql_catalog_reads_as_duckdb_reports_it(stack):
    duckling = stack.new_duckling(1, "pf-pg")
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    facts = hook.read_catalog(duckling, storage, LAKE_SCHEMA, "events")
    assert facts is not None and not facts.initialised  # an empty database: not a DuckLake catalog yet
    with hook.attach(duckling, storage) as con:
        ensure_table(con, EVENTS)
        con.execute("ALTER TABLE lake.posthog.events ADD COLUMN amount DECIMAL(18,3)")
        expected = duckdbs_own_answer(con, "events")
    facts = hook.read_catalog(duckling, storage, LAKE_SCHEMA, "events")
    assert facts is not None and facts.initialised and facts.owner == "1"
    assert facts.columns == expected and expected["amount"] == "DECIMAL(18,3)"
    with pytest.raises(ConfigurationError, match="belongs to team 1, not to team 2"):
        hook.read_catalog(dataclasses.replace(duckling, team_id=2), storage, LAKE_SCHEMA, "events")


def test_the_pre_flight_runs_here_while_the_count_runs_beside_it_and_its_failure_wins(stack):
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.transfer.export import count_alongside
    from tests.support.stack import DAYS

    class CountingHook(ClickHouseHook):
        """The real hook; it also notes which thread each query ran on."""

        def query_rows(self, sql, parameters=None):
            counted_on.append(threading.get_ident())
            return super().query_rows(sql, parameters)

    clickhouse = CountingHook()
    partition = Partition(1, DAYS[0])
    ran_on: list[int] = []
    counted_on: list[int] = []
    assert count_alongside(clickhouse, EVENTS, partition, lambda: ran_on.append(threading.get_ident())) == \
        stack.counts[(1, DAYS[0])]
    assert ran_on == [threading.get_ident()]  # Airflow calls stay in the task's own thread
    assert len(counted_on) == 1 and counted_on[0] != threading.get_ident()  # the count ran beside it

    def failing() -> None:
        raise ConfigurationError("the lake refuses")

    with pytest.raises(ConfigurationError, match="the lake refuses"):
        count_alongside(ClickHouseHook(), EVENTS, partition, failing)
