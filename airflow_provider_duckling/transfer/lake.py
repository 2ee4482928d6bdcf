"""Operations on an attached duckling: create tables, check schemas, and swap a partition's files in.

The swap is one DuckLake transaction: delete the scope's rows (one team-day, or all of a team's rows for
a full export), register the new file(s), check the row count, commit. Readers see the old data or the
new, never an empty or a doubled day. With ``delete_tables`` the same transaction first drops and
recreates the table. Concurrent snapshots that conflict are retried with backoff, as is the
``CREATE TABLE IF NOT EXISTS`` race between two workers.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import duckdb

from airflow_provider_duckling.access.lake_metadata import read_attached
from airflow_provider_duckling.common.errors import RegistrationError, SchemaDriftError, TransientError
from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal
from airflow_provider_duckling.common.retry import is_conflict, retry_conflicts
from airflow_provider_duckling.domain.partitions import DayRange, FullExport, Partition, Scope, key_day
from airflow_provider_duckling.domain.persons import baseline_comment, exported_as_of
from airflow_provider_duckling.domain.tables import LAKE_SCHEMA, PERSONS, PERSONS_CURRENT_VIEW, TableSpec
from airflow_provider_duckling.hooks.ducklake import LAKE_ALIAS, OWNER_KEY

log = logging.getLogger(__name__)
T = TypeVar("T")

_METADATA = duckdb_ident(f"__ducklake_metadata_{LAKE_ALIAS}")
# (file type, lake type) pairs DuckLake accepts: a file column may be narrower than the table's.
_WIDENINGS = {
    ("TINYINT", "SMALLINT"), ("TINYINT", "INTEGER"), ("TINYINT", "BIGINT"), ("SMALLINT", "INTEGER"),
    ("SMALLINT", "BIGINT"), ("INTEGER", "BIGINT"), ("UTINYINT", "USMALLINT"), ("UTINYINT", "UINTEGER"),
    ("UTINYINT", "UBIGINT"), ("USMALLINT", "UINTEGER"), ("USMALLINT", "UBIGINT"), ("UINTEGER", "UBIGINT"),
    ("FLOAT", "DOUBLE"),
}


def qualified(table: TableSpec | str) -> str:
    name = table if isinstance(table, str) else table.name
    return f"{duckdb_ident(LAKE_ALIAS)}.{duckdb_ident(LAKE_SCHEMA)}.{duckdb_ident(name)}"


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
        f"SELECT count(*) FROM duckdb_tables() WHERE database_name = {duckdb_literal(LAKE_ALIAS)} "
        f"AND schema_name = {duckdb_literal(LAKE_SCHEMA)} AND table_name = {duckdb_literal(table.name)}"
    ).fetchone()
    return bool(row and row[0])


#: The persons_current view: each distinct_id's latest row (the latest change, then the latest export of
#: it), tombstones (``id IS NULL``: no live person at that time) left out.
PERSONS_LATEST_FIRST = ("ORDER BY _timestamp DESC, _inserted_at DESC, person_distinct_id_version DESC, "
                        "person_version DESC NULLS FIRST")
PERSONS_CURRENT_SQL = (
    "SELECT * EXCLUDE (_rank) FROM (SELECT *, row_number() OVER (PARTITION BY team_id, distinct_id "
    f"{PERSONS_LATEST_FIRST}) AS _rank FROM {qualified(PERSONS)}) WHERE _rank = 1 AND id IS NOT NULL"
)


def _view_statement(replace: bool = False) -> str:
    verb = "CREATE OR REPLACE VIEW" if replace else "CREATE VIEW IF NOT EXISTS"
    return f"{verb} {qualified(PERSONS_CURRENT_VIEW)} AS {PERSONS_CURRENT_SQL}"


def _create_statements(table: TableSpec) -> list[str]:
    """DDL for the table and, for persons, the current-row view."""
    statements = [table.lake_ddl(LAKE_ALIAS)]
    if table.name == PERSONS.name:
        statements.append(_view_statement())
    return statements


def ensure_current_view(con: duckdb.DuckDBPyConnection) -> bool:
    """Give a lake made by an earlier release (whose view did not drop tombstones) the current
    ``persons_current`` definition; True when it was replaced."""
    row = con.execute(
        f"SELECT sql FROM duckdb_views() WHERE database_name = {duckdb_literal(LAKE_ALIAS)} "
        f"AND schema_name = {duckdb_literal(LAKE_SCHEMA)} AND view_name = {duckdb_literal(PERSONS_CURRENT_VIEW)}"
    ).fetchone()
    if row is not None and "id IS NOT NULL" in str(row[0]):
        return False

    def replace() -> None:
        con.execute("BEGIN")
        con.execute(_view_statement(replace=True))
        con.execute("COMMIT")

    with_conflict_retries(con, "replace persons_current", replace)
    log.info("event=view_replaced view=%s.%s: tombstones now leave it", LAKE_SCHEMA, PERSONS_CURRENT_VIEW)
    return True


def ensure_table(con: duckdb.DuckDBPyConnection, table: TableSpec) -> bool:
    """Create the schema and table (and view) if missing; safe when several workers do it at once."""
    if table_exists(con, table):
        return False

    def create() -> bool:
        con.execute("BEGIN")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {duckdb_ident(LAKE_ALIAS)}.{duckdb_ident(LAKE_SCHEMA)}")
        for statement in _create_statements(table):
            con.execute(statement)
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
    """The lake table's columns and their types, in order; empty when the table does not exist.

    Read from DuckLake's metadata tables, which leaves DuckLake's load of its catalog to the swap that needs
    it anyway; DuckDB answers what those cannot describe exactly (another format, a nested type).
    """
    facts = read_attached(con, _METADATA, LAKE_SCHEMA, table.name, OWNER_KEY)
    if facts is not None:
        return facts.columns
    rows = con.execute(
        f"SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = {duckdb_literal(LAKE_ALIAS)} "
        f"AND schema_name = {duckdb_literal(LAKE_SCHEMA)} AND table_name = {duckdb_literal(table.name)} "
        "ORDER BY column_index"
    ).fetchall()
    return {name: normalize_type(kind) for name, kind in rows}


def table_comment(con: duckdb.DuckDBPyConnection, table: TableSpec) -> str | None:
    """``table``'s current comment (persons: the time of the team's full export); None for other tables."""
    from airflow_provider_duckling.access.lake_metadata import COMMENTED_TABLES, table_comment_sql

    if table.name not in COMMENTED_TABLES:
        return None
    rows = con.execute(table_comment_sql(LAKE_SCHEMA, table.name, f"{_METADATA}.")).fetchall()
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def file_columns(con: duckdb.DuckDBPyConnection, uri: str) -> dict[str, str]:
    try:
        rows = con.execute(
            "SELECT column_name, column_type FROM "
            f"(DESCRIBE SELECT * FROM read_parquet({duckdb_literal(uri)}, hive_partitioning = false))"
        ).fetchall()
    except duckdb.IOException as exc:  # S3 unreachable or refusing the read (e.g. an expired session): retryable
        raise TransientError(f"cannot read the exported file: {_io_reason(exc)}") from None
    return {name: normalize_type(kind) for name, kind in rows}


def normalize_type(kind: str) -> str:
    kind = kind.upper()
    return {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ"}.get(kind, kind)


@dataclass(frozen=True)
class SchemaCheck:
    """How a lake table compares with what the export writes."""

    warnings: list[str]
    incompatible: list[str]


def check_schema(export_columns: dict[str, str], lake_columns: dict[str, str]) -> SchemaCheck:
    """Missing/extra columns are warnings; a type the lake table cannot accept is incompatible."""
    warnings, incompatible = [], []
    for name, kind in export_columns.items():
        kind = normalize_type(kind)
        if name not in lake_columns:
            warnings.append(f"column {name} ({kind}) is exported but missing from the lake table (it will be dropped)")
        elif lake_columns[name] != kind and (kind, lake_columns[name]) not in _WIDENINGS:
            incompatible.append(f"column {name} is {lake_columns[name]} in the lake table, the export writes {kind}")
    for name, kind in lake_columns.items():
        if name not in export_columns:
            warnings.append(f"column {name} ({kind}) in the lake table is not exported (it will read NULL)")
    return SchemaCheck(warnings, incompatible)


@dataclass(frozen=True)
class SwapResult:
    """What one swap did."""

    deleted_rows: int
    added_files: int
    rows: int
    snapshot_id: int | None
    already_registered: bool = False
    dropped_rows: int = 0


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
    paths = ", ".join(duckdb_literal(path) for path in wanted)
    rows = con.execute(
        f"SELECT path, end_snapshot IS NULL FROM {_METADATA}.ducklake_data_file WHERE path IN ({paths})"
    ).fetchall()
    found: dict[str, bool] = {}
    for path, live in rows:
        uri = wanted[path]
        found[uri] = found.get(uri, False) or bool(live)
    return found


def file_day(uri: str) -> dt.date | None:
    """The day a file's key names (``…/year=YYYY/month=MM/day=DD/name``), or None."""
    named = key_day(uri)
    return named[0] if named else None


def _day_bounds(scope: Scope, uri: str) -> tuple[dt.datetime, dt.datetime] | None:
    """The time range a file's rows must lie in: the day's (a batch: the day its key names, which must be one
    of the batch's); ``None`` when the rows have no day bound (a full export)."""
    if isinstance(scope, Partition):
        return scope.start, scope.end
    if isinstance(scope, DayRange):
        day = file_day(uri)
        if day is None or not scope.first <= day <= scope.last:
            raise RegistrationError(f"{scope.key}: {uri} is not a file of one of the batch's days")
        return Partition(scope.team_id, day).start, Partition(scope.team_id, day).end
    return None


def rows_proven_by_file(con: duckdb.DuckDBPyConnection, table: TableSpec, scope: Scope, uris: list[str],
                        ) -> dict[str, int] | None:
    """Each file's rows, read from its Parquet footer, when the footers' statistics prove every row belongs
    to ``scope`` (its team, and the UTC day of its file); ``None`` when they cannot prove it (then the
    caller counts the lake instead).

    Checking footers instead of scanning keeps the data out of the worker's memory.
    """
    if not uris:
        return {}
    day_column = duckdb_literal(table.day_column)
    groups = con.execute(
        f"""
        SELECT file_name, row_group_id, any_value(row_group_num_rows),
               min(TRY_CAST(stats_min_value AS BIGINT)) FILTER (WHERE path_in_schema = 'team_id'),
               max(TRY_CAST(stats_max_value AS BIGINT)) FILTER (WHERE path_in_schema = 'team_id'),
               min(TRY_CAST(stats_min_value AS TIMESTAMPTZ)) FILTER (WHERE path_in_schema = {day_column}),
               max(TRY_CAST(stats_max_value AS TIMESTAMPTZ)) FILTER (WHERE path_in_schema = {day_column})
        FROM parquet_metadata({duckdb_literal(list(uris))})
        GROUP BY file_name, row_group_id
        """
    ).fetchall()
    by_file = dict.fromkeys(uris, 0)
    for file_name, _, rows, team_min, team_max, day_min, day_max in groups:
        if not rows:
            continue
        if team_min is None or team_min != scope.team_id or team_max != scope.team_id:
            return None
        bounds = _day_bounds(scope, str(file_name))
        if bounds is not None and (day_min is None or day_max is None or day_min < bounds[0] or day_max >= bounds[1]):
            return None
        by_file[str(file_name)] = by_file.get(str(file_name), 0) + int(rows)
    return by_file


def rows_proven_in_scope(con: duckdb.DuckDBPyConnection, table: TableSpec, scope: Scope, uris: list[str]) -> int | None:
    """The files' rows when their footers prove every row belongs to ``scope`` (see :func:`rows_proven_by_file`)."""
    by_file = rows_proven_by_file(con, table, scope, uris)
    return None if by_file is None else sum(by_file.values())


def lake_rows_by_day(con: duckdb.DuckDBPyConnection, table: TableSpec, scope: DayRange) -> dict[str, int]:
    """Rows per UTC day (``YYYY-MM-DD``) of a batch's days in the lake table (days without rows left out)."""
    col = duckdb_ident(table.day_column)
    rows = con.execute(
        f"SELECT strftime(timezone('UTC', {col}), '%Y-%m-%d') AS day, count(*) FROM {qualified(table)} "
        f"WHERE {scope.lake_predicate(table.day_column)} GROUP BY day"
    ).fetchall()
    return {str(day): int(n) for day, n in rows}


def _day_sums(by_file: dict[str, int]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for uri, rows in by_file.items():
        day = file_day(uri)
        if day is not None and rows:
            sums[day.isoformat()] = sums.get(day.isoformat(), 0) + rows
    return sums


def count_rows(con: duckdb.DuckDBPyConnection, table: TableSpec, scope: Scope) -> int:
    """Rows of ``scope`` (a team-day, or a whole team) in the lake table."""
    row = con.execute(f"SELECT count(*) FROM {qualified(table)} WHERE {scope.lake_predicate(table.day_column)}").fetchone()
    return int(row[0])


def swap(
    con: duckdb.DuckDBPyConnection,
    table: TableSpec,
    scope: Scope,
    uris: list[str],
    expected_rows: int,
    data_path: str,
    *,
    cleanup_existing: bool = True,
    reset_table: bool = False,
    commit_message: str = "",
    day_rows: dict[str, int] | None = None,
) -> SwapResult:
    """Atomically replace ``scope``'s rows with the rows of ``uris``.

    :param uris: the exported files, as DuckDB addresses them.
    :param expected_rows: rows the export wrote; the scope must hold exactly this many afterwards
        (plus the rows kept when ``cleanup_existing`` is off), or nothing is committed.
    :param day_rows: a batch of days: each day's rows as exported; each day must hold exactly these (with
        ``cleanup_existing``), or nothing is committed.
    :param cleanup_existing: delete the scope's existing rows in the same transaction (the default).
    :param reset_table: drop and recreate the table (and its view) in the same transaction first.
    """
    predicate = scope.lake_predicate(table.day_column)
    baseline = exported_as_of(uris) if isinstance(scope, FullExport) and table.name == PERSONS.name else None

    def attempt() -> SwapResult:
        con.execute("BEGIN")
        seen = registered_files(con, uris, data_path)
        if seen:
            current = count_rows(con, table, scope)
            con.execute("ROLLBACK")
            if len(seen) == len(uris) and all(seen.values()) and current == expected_rows and not reset_table:
                return SwapResult(0, 0, current, None, already_registered=True)
            raise RegistrationError(
                f"{scope.key}: {len(seen)} of the exported file(s) were registered before "
                f"(the lake now holds {current} rows for it, the export wrote {expected_rows}); a file is never "
                "registered twice: clear the export task too so that it writes a new file"
            )
        if commit_message:
            con.execute(
                f"CALL {duckdb_ident(LAKE_ALIAS)}.set_commit_message('airflow-provider-duckling', "
                f"{duckdb_literal(commit_message)})"
            )
        dropped = 0
        if reset_table:
            dropped = int(con.execute(f"SELECT count(*) FROM {qualified(table)}").fetchone()[0])
            if table.name == PERSONS.name:
                con.execute(f"DROP VIEW IF EXISTS {qualified(PERSONS_CURRENT_VIEW)}")
            con.execute(f"DROP TABLE {qualified(table)}")
            for statement in _create_statements(table):
                con.execute(statement)
        # With cleanup (the default) the scope is emptied first, so nothing of it needs reading; without,
        # its current rows are counted to check the sum afterwards.
        before, deleted = 0, 0
        if cleanup_existing:
            row = con.execute(f"DELETE FROM {qualified(table)} WHERE {predicate}").fetchone()
            deleted = int(row[0]) if row else 0
        else:
            before = count_rows(con, table, scope)
        for uri in uris:
            try:
                con.execute(
                    f"CALL ducklake_add_data_files({duckdb_literal(LAKE_ALIAS)}, {duckdb_literal(table.name)}, "
                    f"{duckdb_literal(uri)}, schema => {duckdb_literal(LAKE_SCHEMA)}, hive_partitioning => false, "
                    "allow_missing => true, ignore_extra_columns => true)"
                )
            except duckdb.Error as exc:
                if is_conflict(exc):
                    raise
                con.execute("ROLLBACK")
                if isinstance(exc, duckdb.IOException):  # S3 unreachable, or refusing the read (an expired
                    # role session answers 400 ExpiredToken): the retry, with a freshly assumed session, may cure it
                    raise TransientError(f"{scope.key}: cannot read the exported file: {_io_reason(exc)}") from None
                raise SchemaDriftError(
                    f"{scope.key}: the lake table {LAKE_SCHEMA}.{table.name} cannot accept the exported file: "
                    f"{str(exc).splitlines()[0]}"
                ) from None
        by_file = rows_proven_by_file(con, table, scope, uris)
        after = before + sum(by_file.values()) if by_file is not None else count_rows(con, table, scope)
        wanted = expected_rows + before
        if after != wanted:
            con.execute("ROLLBACK")
            raise RegistrationError(
                f"{scope.key}: after registering, the lake would hold {after} rows for it, expected {wanted}; "
                "nothing committed"
            )
        if isinstance(scope, DayRange) and day_rows is not None and cleanup_existing:
            held = _day_sums(by_file) if by_file is not None else lake_rows_by_day(con, table, scope)
            wrong = [d for d in sorted(set(held) | set(day_rows)) if held.get(d, 0) != day_rows.get(d, 0)]
            if wrong:
                con.execute("ROLLBACK")
                raise RegistrationError(
                    f"{scope.key}: after registering, {wrong[0]} would hold {held.get(wrong[0], 0)} rows, the export "
                    f"wrote {day_rows.get(wrong[0], 0)} ({len(wrong)} day(s) differ); nothing committed"
                )
        if baseline is not None:  # the persons full export: the daily top-ups it covers are skipped from now on
            con.execute(f"COMMENT ON TABLE {qualified(table)} IS {duckdb_literal(baseline_comment(baseline))}")
        con.execute("COMMIT")
        snapshot = con.execute(f"SELECT * FROM {duckdb_ident(LAKE_ALIAS)}.last_committed_snapshot()").fetchone()
        snapshot_id = int(snapshot[0]) if snapshot and snapshot[0] is not None else None
        return SwapResult(deleted, len(uris), after, snapshot_id, dropped_rows=dropped)

    return with_conflict_retries(con, f"register {scope.key}", attempt)


def _io_reason(exc: duckdb.Error) -> str:
    """A DuckDB I/O error's first line, plus the line naming S3's error code when there is one
    (``ExpiredToken: The provided token has expired.``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    coded = next((line for line in lines[1:] if re.match(r"[A-Z][A-Za-z]+: ", line)), None)
    return f"{lines[0]}: {coded}" if coded else lines[0]


def _inside(scope: Scope, table: TableSpec, data_path: str, uri: str) -> bool:
    """Whether ``uri`` lies under the scope's prefix (a batch: under the prefix of one of its own days)."""
    if "/../" in uri or not uri.startswith(data_path + scope.prefix(table.name)):
        return False
    if isinstance(scope, DayRange):
        day = file_day(uri)
        return (day is not None and scope.first <= day <= scope.last
                and uri.startswith(data_path + Partition(scope.team_id, day).prefix(table.name)))
    return True


def register_files(
    con: duckdb.DuckDBPyConnection,
    table: TableSpec,
    scope: Scope,
    uris: list[str],
    expected_rows: int,
    data_path: str,
    *,
    cleanup_existing: bool = True,
    create_if_missing: bool = True,
    delete_tables: bool = False,
    commit_message: str = "",
    day_rows: dict[str, int] | None = None,
) -> SwapResult:
    """Everything the register step does on an attached lake: isolation check, table, drift, swap."""
    allowed = data_path + scope.prefix(table.name)
    foreign = [u for u in uris if not _inside(scope, table, data_path, u)]
    if foreign:
        raise RegistrationError(f"{scope.key}: refusing files outside {allowed}: {foreign}")
    lake = table_columns(con, table)  # empty: no such table (one catalog lookup answers both)
    if not lake:
        if not create_if_missing and not delete_tables:
            raise SchemaDriftError(
                f"table {LAKE_SCHEMA}.{table.name} does not exist in the duckling of team {scope.team_id} "
                "and create_tables_if_missing is off"
            )
        ensure_table(con, table)
    elif not delete_tables:
        for uri in uris[:1]:
            for problem in check_schema(file_columns(con, uri), lake).warnings:
                log.warning("event=schema_drift table=%s.%s %s", LAKE_SCHEMA, table.name, problem)
        if table.name == PERSONS.name:
            ensure_current_view(con)
    result = swap(
        con, table, scope, uris, expected_rows, data_path,
        cleanup_existing=cleanup_existing, reset_table=delete_tables, commit_message=commit_message, day_rows=day_rows,
    )
    if delete_tables:
        log.warning(
            "event=tables_dropped DANGER table=%s.%s dropped_rows=%d: dropped and recreated by delete_tables",
            LAKE_SCHEMA, table.name, result.dropped_rows,
        )
    if result.already_registered:
        log.info("event=already_registered partition=%s table=%s rows=%d", scope.key, table.name, result.rows)
    else:
        log.info(
            "event=partition_registered partition=%s table=%s files=%d rows=%d deleted_rows=%d snapshot_id=%s",
            scope.key, table.name, result.added_files, result.rows, result.deleted_rows, result.snapshot_id,
        )
    return result

