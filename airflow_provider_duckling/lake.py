"""Operations on an attached duckling: create tables, detect drift, and swap a partition's files in.

The swap is one DuckLake transaction: delete the team-day's rows, register the new file(s), check the
day's row count, commit. Readers see the old day or the new day, never an empty or a doubled one. DuckLake
refuses concurrent snapshots that touch the same table in conflicting ways; those are retried with
backoff, as is the ``CREATE TABLE IF NOT EXISTS`` race between two workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import duckdb

from airflow_provider_duckling.errors import RegistrationError, SchemaDriftError
from airflow_provider_duckling.hooks.ducklake import LAKE_ALIAS
from airflow_provider_duckling.partitions import Partition
from airflow_provider_duckling.quoting import duckdb_ident
from airflow_provider_duckling.retry import is_conflict, retry_conflicts
from airflow_provider_duckling.tables import LAKE_SCHEMA, TableSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

_METADATA = duckdb_ident(f"__ducklake_metadata_{LAKE_ALIAS}")


def qualified(table: TableSpec) -> str:
    return f"{duckdb_ident(LAKE_ALIAS)}.{duckdb_ident(LAKE_SCHEMA)}.{duckdb_ident(table.name)}"


def with_conflict_retries(con: duckdb.DuckDBPyConnection, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` (which opens and commits its own transaction), rolling back and retrying conflicts."""
    return retry_conflicts(what, fn, on_error=lambda: _rollback(con))


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def table_exists(con: duckdb.DuckDBPyConnection, table: TableSpec) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = ? AND table_name = ?",
        [LAKE_ALIAS, LAKE_SCHEMA, table.name],
    ).fetchone()
    return bool(row and row[0])


def ensure_table(con: duckdb.DuckDBPyConnection, table: TableSpec) -> bool:
    """Create the schema and table if missing; safe when several workers do it at once. True if created."""
    if table_exists(con, table):
        return False

    def create() -> bool:
        con.execute("BEGIN")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {duckdb_ident(LAKE_ALIAS)}.{duckdb_ident(LAKE_SCHEMA)}")
        con.execute(table.lake_ddl(LAKE_ALIAS))
        con.execute("COMMIT")
        return True

    try:
        with_conflict_retries(con, f"create {table.name}", create)
    except duckdb.Error:
        # Another worker won the race and its table is there now: that is success.
        if table_exists(con, table):
            return False
        raise
    log.info("event=table_created table=%s.%s", LAKE_SCHEMA, table.name)
    return True


def table_columns(con: duckdb.DuckDBPyConnection, table: TableSpec) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
        "AND table_name = ? ORDER BY column_index",
        [LAKE_ALIAS, LAKE_SCHEMA, table.name],
    ).fetchall()
    return {name: _normalize_type(kind) for name, kind in rows}


def file_columns(con: duckdb.DuckDBPyConnection, uri: str) -> dict[str, str]:
    rows = con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = false))", [uri]).fetchall()
    return {name: _normalize_type(kind) for name, kind in rows}


def _normalize_type(kind: str) -> str:
    kind = kind.upper()
    return {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ"}.get(kind, kind)


def describe_drift(expected: dict[str, str], actual: dict[str, str], actual_name: str) -> list[str]:
    """Human-readable differences between two column → type maps (empty when they agree)."""
    problems = []
    for name, kind in expected.items():
        if name not in actual:
            problems.append(f"column {name} ({kind}) is missing from the {actual_name}")
        elif actual[name] != _normalize_type(kind):
            problems.append(f"column {name} is {actual[name]} in the {actual_name}, expected {_normalize_type(kind)}")
    for name, kind in actual.items():
        if name not in expected:
            problems.append(f"column {name} ({kind}) in the {actual_name} is not part of the export")
    return problems


@dataclass(frozen=True)
class SwapResult:
    """What one partition swap did."""

    deleted_rows: int
    added_files: int
    rows: int
    snapshot_id: int | None
    already_registered: bool = False


def _catalog_paths(uri: str, data_path: str) -> list[str]:
    """The forms a file's path can take in the catalog (absolute, or relative to DATA_PATH)."""
    paths = [uri]
    if uri.startswith(data_path):
        paths.append(uri[len(data_path):])
    return paths


def registered_files(con: duckdb.DuckDBPyConnection, uris: list[str], data_path: str) -> dict[str, bool]:
    """Which of ``uris`` the catalog has ever registered, mapped to whether they are still live."""
    if not uris:
        return {}
    wanted = {p: uri for uri in uris for p in _catalog_paths(uri, data_path)}
    placeholders = ", ".join("?" for _ in wanted)
    rows = con.execute(
        f"SELECT path, end_snapshot IS NULL FROM {_METADATA}.ducklake_data_file WHERE path IN ({placeholders})",
        list(wanted),
    ).fetchall()
    found: dict[str, bool] = {}
    for path, live in rows:
        uri = wanted[path]
        found[uri] = found.get(uri, False) or bool(live)
    return found


def count_partition_rows(con: duckdb.DuckDBPyConnection, table: TableSpec, partition: Partition) -> int:
    day_col = duckdb_ident(table.day_column)
    row = con.execute(
        f"SELECT count(*) FROM {qualified(table)} WHERE team_id = ? AND {day_col} >= ? AND {day_col} < ?",
        [partition.team_id, partition.start, partition.end],
    ).fetchone()
    return int(row[0])


def swap_partition(
    con: duckdb.DuckDBPyConnection,
    table: TableSpec,
    partition: Partition,
    uris: list[str],
    expected_rows: int,
    data_path: str,
    *,
    cleanup_existing: bool = True,
    commit_message: str = "",
) -> SwapResult:
    """Atomically replace one team-day's rows with the rows of ``uris``.

    :param uris: the exported files, as DuckDB addresses them.
    :param expected_rows: rows the export wrote; the day must hold exactly this many afterwards
        (plus the rows kept when ``cleanup_existing`` is off), or nothing is committed.
    :param cleanup_existing: delete the day's existing rows in the same transaction (the default).
    """
    day_col = duckdb_ident(table.day_column)

    def attempt() -> SwapResult:
        con.execute("BEGIN")
        seen = registered_files(con, uris, data_path)
        if seen:
            current = count_partition_rows(con, table, partition)
            if len(seen) == len(uris) and all(seen.values()) and current == expected_rows:
                con.execute("ROLLBACK")
                return SwapResult(0, 0, current, None, already_registered=True)
            con.execute("ROLLBACK")
            raise RegistrationError(
                f"{partition.key}: {len(seen)} of the exported file(s) were registered before "
                f"(the day now holds {current} rows, the export wrote {expected_rows}); a file is never registered "
                "twice: clear the export task too so that it writes a new file"
            )
        if commit_message:
            con.execute(
                f"CALL {duckdb_ident(LAKE_ALIAS)}.set_commit_message('airflow-provider-duckling', ?)", [commit_message]
            )
        deleted = 0
        before = count_partition_rows(con, table, partition)
        if cleanup_existing and before:
            row = con.execute(
                f"DELETE FROM {qualified(table)} WHERE team_id = ? AND {day_col} >= ? AND {day_col} < ?",
                [partition.team_id, partition.start, partition.end],
            ).fetchone()
            deleted = int(row[0]) if row else before
        for uri in uris:
            try:
                con.execute(
                    "CALL ducklake_add_data_files(?, ?, ?, schema => ?, hive_partitioning => false, "
                    "allow_missing => true, ignore_extra_columns => true)",
                    [LAKE_ALIAS, table.name, uri, LAKE_SCHEMA],
                )
            except duckdb.Error as exc:
                if is_conflict(exc):
                    raise
                con.execute("ROLLBACK")
                raise SchemaDriftError(
                    f"{partition.key}: the lake table {LAKE_SCHEMA}.{table.name} cannot accept the exported file: "
                    f"{str(exc).splitlines()[0]}"
                ) from None
        after = count_partition_rows(con, table, partition)
        wanted = expected_rows + (0 if cleanup_existing else before)
        if after != wanted:
            con.execute("ROLLBACK")
            raise RegistrationError(
                f"{partition.key}: after registering, the day would hold {after} rows, expected {wanted}; nothing committed"
            )
        con.execute("COMMIT")
        snapshot = con.execute(f"SELECT * FROM {duckdb_ident(LAKE_ALIAS)}.last_committed_snapshot()").fetchone()
        return SwapResult(deleted, len(uris), after, int(snapshot[0]) if snapshot and snapshot[0] is not None else None)

    return with_conflict_retries(con, f"register {partition.key}", attempt)


def register_files(
    con: duckdb.DuckDBPyConnection,
    table: TableSpec,
    partition: Partition,
    uris: list[str],
    expected_rows: int,
    data_path: str,
    *,
    cleanup_existing: bool = True,
    create_if_missing: bool = True,
    commit_message: str = "",
) -> SwapResult:
    """Everything the register step does on an attached lake: isolation check, table, drift, swap."""
    allowed = data_path + partition.prefix(table.name)
    foreign = [u for u in uris if not u.startswith(allowed)]
    if foreign:
        raise RegistrationError(f"{partition.key}: refusing files outside {allowed}: {foreign}")
    if not table_exists(con, table):
        if not create_if_missing:
            raise SchemaDriftError(
                f"table {LAKE_SCHEMA}.{table.name} does not exist in the duckling of team {partition.team_id} "
                "and create_tables_if_missing is off"
            )
        ensure_table(con, table)
    for problem in describe_drift(table.lake_columns, table_columns(con, table), "lake table"):
        log.warning("event=schema_drift table=%s.%s %s", LAKE_SCHEMA, table.name, problem)
    if uris:
        for problem in describe_drift(table.lake_columns, file_columns(con, uris[0]), "exported file"):
            log.warning("event=schema_drift table=%s.%s %s", LAKE_SCHEMA, table.name, problem)
    result = swap_partition(
        con, table, partition, uris, expected_rows, data_path,
        cleanup_existing=cleanup_existing, commit_message=commit_message,
    )
    if result.already_registered:
        log.info("event=already_registered partition=%s table=%s rows=%d", partition.key, table.name, result.rows)
    else:
        log.info(
            "event=partition_registered partition=%s table=%s files=%d rows=%d deleted_rows=%d snapshot_id=%s",
            partition.key, table.name, result.added_files, result.rows, result.deleted_rows, result.snapshot_id,
        )
    return result
