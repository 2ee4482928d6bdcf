"""The events table's layout: every data file holds the rows of one UTC day, sorted by ``timestamp``.

The customer's usual query is a day or a range of days. DuckLake skips a file whose ``timestamp`` statistics
(kept in the catalog) miss the query's range, so with one day per file a day's query reads that day's file and
nothing else. ``ducklake_merge_adjacent_files`` merges neighbouring small files whatever days they hold: one
pass turned a year of daily files into one file, and a one-day query then read the year (P6: 46 → 130 ms).
So maintenance never merges events across days. Instead it rewrites, one transaction per group:

* a day whose several small files (a day appended to, a split day of small files) become one file;
* the days of any file that spans several days (a lake merged by an earlier release) become one file per day.

A rewrite is a copy inside the lake: the group's rows are inserted again, one ``INSERT`` per day (each writes its
own file), sorted by ``timestamp``, then the old rows are deleted by row id, and the counts are checked before
the commit. Readers see the old files or the new ones. A registration of one of the days at the same time
conflicts with the rewrite; the retry reads the day again. Files without ``timestamp`` statistics are left
alone (their days cannot be known from the catalog).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import duckdb

from airflow_provider_duckling.common.errors import DucklingError
from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal
from airflow_provider_duckling.domain.tables import LAKE_SCHEMA, TableSpec
from airflow_provider_duckling.hooks.ducklake import LAKE_ALIAS
from airflow_provider_duckling.transfer.lake import qualified, with_conflict_retries

log = logging.getLogger(__name__)

_METADATA = duckdb_ident(f"__ducklake_metadata_{LAKE_ALIAS}")
#: A day's files are merged into one only while together they stay below this size: bigger days were split on
#: purpose (``rows_per_file``), and a file per day is all a day's query needs.
DAY_MERGE_MAX_BYTES = 256 * 1024 * 1024
_ROW_IDS = "__duckling_relayout_rows"
_ONE_DAY = dt.timedelta(days=1)

#: Each live data file of a table: its size and the UTC days of its smallest and largest day-column value,
#: from the statistics DuckLake keeps in the catalog (no file is read).
_FILES_SQL = """
WITH tbl AS (
    SELECT t.table_id FROM {meta}.ducklake_table t
    JOIN {meta}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
    WHERE t.end_snapshot IS NULL AND s.schema_name = {schema} AND t.table_name = {table}
), col AS (
    SELECT c.column_id FROM {meta}.ducklake_column c JOIN tbl ON c.table_id = tbl.table_id
    WHERE c.end_snapshot IS NULL AND c.parent_column IS NULL AND c.column_name = {day}
)
SELECT f.data_file_id, f.file_size_bytes,
       CAST(timezone('UTC', TRY_CAST(st.min_value AS TIMESTAMPTZ)) AS DATE),
       CAST(timezone('UTC', TRY_CAST(st.max_value AS TIMESTAMPTZ)) AS DATE)
FROM {meta}.ducklake_data_file f JOIN tbl ON f.table_id = tbl.table_id
LEFT JOIN {meta}.ducklake_file_column_stats st
       ON st.data_file_id = f.data_file_id AND st.column_id = (SELECT column_id FROM col)
WHERE f.end_snapshot IS NULL
ORDER BY f.data_file_id
"""


@dataclass(frozen=True)
class DayFile:
    """One live data file and the UTC days its rows span (``None``: the catalog has no statistics)."""

    file_id: int
    size: int
    first: dt.date | None
    last: dt.date | None


@dataclass(frozen=True)
class Rewrite:
    """Days [first, last] to rewrite as one file per day, and the files that hold their rows now."""

    first: dt.date
    last: dt.date
    files: int


@dataclass
class LayoutReport:
    """What keeping the day layout did (a dry run: what it would do)."""

    rewrites: list[Rewrite] = field(default_factory=list)
    files_replaced: int = 0
    days_rewritten: int = 0
    files_without_stats: int = 0


def day_files(con: duckdb.DuckDBPyConnection, table: TableSpec) -> list[DayFile]:
    """The table's live data files with the days they span, from DuckLake's catalog."""
    rows = con.execute(_FILES_SQL.format(
        meta=_METADATA, schema=duckdb_literal(LAKE_SCHEMA), table=duckdb_literal(table.name),
        day=duckdb_literal(table.day_column),
    )).fetchall()
    return [DayFile(int(fid), int(size or 0), first, last) for fid, size, first, last in rows]


def _spans(files: list[DayFile]) -> list[tuple[dt.date, dt.date]]:
    """Day ranges covered by files of several days, overlapping ranges joined."""
    ranges = sorted((f.first, f.last) for f in files if f.first and f.last and f.first != f.last)
    joined: list[tuple[dt.date, dt.date]] = []
    for first, last in ranges:
        if joined and first <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(last, joined[-1][1]))
        else:
            joined.append((first, last))
    return joined


def _small_days(files: list[DayFile], max_day_bytes: int) -> list[dt.date]:
    """Days held by several single-day files that together stay below ``max_day_bytes``."""
    count: dict[dt.date, int] = {}
    size: dict[dt.date, int] = {}
    for f in files:
        if f.first is not None and f.first == f.last:
            count[f.first] = count.get(f.first, 0) + 1
            size[f.first] = size.get(f.first, 0) + f.size
    return sorted(day for day, n in count.items() if n > 1 and size[day] <= max_day_bytes)


def plan_rewrites(files: list[DayFile], *, max_files: int, max_day_bytes: int = DAY_MERGE_MAX_BYTES,
                  ) -> list[Rewrite]:
    """The groups of days to rewrite, oldest first, until about ``max_files`` files are replaced (at least one
    group; the next pass continues)."""
    spans = _spans(files)
    in_span = lambda day: any(a <= day <= b for a, b in spans)  # noqa: E731
    groups = sorted(spans + [(d, d) for d in _small_days(files, max_day_bytes) if not in_span(d)])
    plan: list[Rewrite] = []
    replaced = 0
    for first, last in groups:
        touched = sum(1 for f in files if f.first and f.last and f.first <= last and f.last >= first)
        if plan and replaced + touched > max_files:
            break
        plan.append(Rewrite(first, last, touched))
        replaced += touched
    return plan


class LayoutError(DucklingError):
    """A re-layout's counts did not match: nothing was committed."""


def _abort(con: duckdb.DuckDBPyConnection, message: str) -> LayoutError:
    """Roll the rewrite back and say why (the error, not a conflict, is not retried)."""
    con.execute("ROLLBACK")
    return LayoutError(message)


def _utc(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _range_predicate(table: TableSpec, first: dt.date, end: dt.date) -> str:
    """Rows whose day column lies in [first, end) (UTC days)."""
    col = duckdb_ident(table.day_column)
    return f"{col} >= {duckdb_literal(_utc(first))} AND {col} < {duckdb_literal(_utc(end))}"


def _rewrite(con: duckdb.DuckDBPyConnection, table: TableSpec, group: Rewrite) -> int:
    """One transaction: the group's rows again, one file per day sorted by the day column, the old rows
    deleted. Returns the rows rewritten; nothing is committed unless every count matches."""
    target, col = qualified(table), duckdb_ident(table.day_column)
    con.execute("BEGIN")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {duckdb_ident(_ROW_IDS)} AS SELECT rowid AS row_id FROM {target} "
                f"WHERE {_range_predicate(table, group.first, group.last + _ONE_DAY)}")
    old = int(con.execute(f"SELECT count(*) FROM {duckdb_ident(_ROW_IDS)}").fetchone()[0])
    days = con.execute(
        f"SELECT CAST(timezone('UTC', {col}) AS DATE) AS day, count(*) FROM {target} "
        f"WHERE {_range_predicate(table, group.first, group.last + _ONE_DAY)} GROUP BY day ORDER BY day"
    ).fetchall()
    for day, rows in days:
        inserted = con.execute(f"INSERT INTO {target} SELECT * FROM {target} "
                               f"WHERE {_range_predicate(table, day, day + _ONE_DAY)} ORDER BY {col}").fetchone()[0]
        if int(inserted) != int(rows):
            raise _abort(con, f"re-layout of {day}: wrote {inserted} rows, the day holds {rows}")
    deleted = con.execute(f"DELETE FROM {target} WHERE rowid IN (SELECT row_id FROM {duckdb_ident(_ROW_IDS)})"
                          ).fetchone()[0]
    after = int(con.execute(f"SELECT count(*) FROM {target} "
                            f"WHERE {_range_predicate(table, group.first, group.last + _ONE_DAY)}").fetchone()[0])
    if int(deleted) != old or after != old:
        raise _abort(con, f"re-layout of {group.first}..{group.last}: {old} rows before, {deleted} deleted, "
                           f"{after} after")
    con.execute("COMMIT")
    con.execute(f"DROP TABLE IF EXISTS {duckdb_ident(_ROW_IDS)}")
    return old


def keep_day_layout(con: duckdb.DuckDBPyConnection, table: TableSpec, *, max_files: int, dry_run: bool = False,
                    max_day_bytes: int = DAY_MERGE_MAX_BYTES) -> LayoutReport:
    """Rewrite what breaks the one-day-per-file layout of ``table`` (see the module docstring)."""
    files = day_files(con, table)
    report = LayoutReport(rewrites=plan_rewrites(files, max_files=max_files, max_day_bytes=max_day_bytes),
                          files_without_stats=sum(1 for f in files if f.first is None or f.last is None))
    report.files_replaced = sum(r.files for r in report.rewrites)
    report.days_rewritten = sum((r.last - r.first).days + 1 for r in report.rewrites)
    if dry_run or not report.rewrites:
        return report
    # A day of a few rows would otherwise be inlined into the catalog instead of written as its file.
    previous = con.execute("SELECT current_setting('ducklake_default_data_inlining_row_limit')").fetchone()[0]
    con.execute("SET ducklake_default_data_inlining_row_limit = 0")
    try:
        for group in report.rewrites:
            rows = with_conflict_retries(con, f"re-layout {table.name} {group.first}..{group.last}",
                                         lambda g=group: _rewrite(con, table, g))
            log.info("event=day_layout_rewrite table=%s first=%s last=%s files=%d rows=%d",
                     table.name, group.first, group.last, group.files, rows)
    finally:
        con.execute(f"SET ducklake_default_data_inlining_row_limit = {int(previous)}")
    return report
