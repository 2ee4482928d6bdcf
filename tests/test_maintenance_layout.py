"""Maintenance keeps the events table one UTC day per file, so a day's query reads only that day's file after
any number of passes (issue 23: a pass once merged a year into one file and a day's lookup read the year).

Real stack (PostgreSQL catalog, moto S3). The lake: 40 daily files registered as the daily runs do; every
third day of the last 30 appended to (a second or third small file), one day re-run (its file replaced); and
the first 10 days merged into one file by ``ducklake_merge_adjacent_files``, as the earlier release's
maintenance did. Two passes later every live file holds one day (its Parquet rows read back, not the
catalog's statistics), a day's query reads one file, a three-day range three, and rows and checksums per
day are what they were.
"""

from __future__ import annotations

import datetime as dt
import re

import duckdb
import pytest

from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.lake import register_files
from airflow_provider_duckling.transfer.maintenance import maintain_lake

TEAM = 23
FIRST = dt.date(2024, 1, 20)  # the 40 days cross a month boundary
DAYS = [FIRST + dt.timedelta(days=n) for n in range(40)]
LEGACY = DAYS[:10]  # merged into one file, as the earlier release's maintenance did
APPENDED = {day: 1 + (n % 2) for n, day in enumerate(DAYS[10::3])}  # extra files: 1 or 2
RERUN = DAYS[20]
ROWS = 120


def _rows_sql(day: dt.date, run: str, rows: int) -> str:
    """``rows`` events of the lake's schema on ``day``, spread from 00:00:00 to 23:59:59.999999 UTC."""
    start = duckdb_literal(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    exprs = {"VARCHAR": "'v' || (i % 7)::VARCHAR", "BIGINT": str(TEAM), "BOOLEAN": "i % 3 = 0",
             "TIMESTAMPTZ": f"{start} + to_microseconds((i * 86399999999 // {rows - 1})::BIGINT)"}
    special = {"uuid": f"{duckdb_literal(run + '-')} || i::VARCHAR", "distinct_id": "'user-' || (i % 9)::VARCHAR",
               "event": "['$pageview', 'signed_up', '$identify'][1 + i % 3]"}
    cols = ", ".join(f"{special.get(c.name, exprs[c.lake_type])} AS {duckdb_ident(c.name)}" for c in EVENTS.columns)
    return f"SELECT {cols} FROM (SELECT range AS i FROM range({rows}))"


def _add(con, storage, day: dt.date, run: str, *, cleanup: bool) -> None:
    partition = Partition(TEAM, day)
    uri = storage.uri(partition.object_key(EVENTS.name, run))
    con.execute(f"COPY ({_rows_sql(day, run, ROWS)}) TO {duckdb_literal(uri)} (FORMAT parquet)")
    register_files(con, EVENTS, partition, [uri], ROWS, storage.data_path, cleanup_existing=cleanup)


def _build(con, storage) -> None:
    for day in LEGACY:
        _add(con, storage, day, "run0", cleanup=True)
    con.execute("CALL ducklake_merge_adjacent_files('lake', 'events', schema => 'posthog')")
    for day in DAYS[10:]:
        _add(con, storage, day, "run0", cleanup=True)
    for day, extra in APPENDED.items():
        for n in range(extra):
            _add(con, storage, day, f"append{n}", cleanup=False)
    _add(con, storage, RERUN, "rerun", cleanup=True)


def _day_tallies(con) -> dict[dt.date, tuple[int, int]]:
    """Rows and an order-free checksum of every column, per UTC day."""
    rows = con.execute(
        "SELECT CAST(timezone('UTC', e.timestamp) AS DATE) AS day, count(*), sum(hash(e)) "
        "FROM lake.posthog.events AS e GROUP BY day"
    ).fetchall()
    return {day: (int(n), int(checksum)) for day, n, checksum in rows}


def _file_days(con) -> dict[str, set[dt.date]]:
    """The UTC days of the rows of each live data file, read from the Parquet files themselves."""
    files = con.execute("SELECT data_file, delete_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')"
                        ).fetchall()
    assert all(delete is None for _, delete in files), "a live file still carries deleted rows"
    rows = con.execute(
        "SELECT filename, list(DISTINCT CAST(timezone('UTC', timestamp) AS DATE)) FROM "
        f"read_parquet({duckdb_literal([path for path, _ in files])}, filename = true) GROUP BY filename"
    ).fetchall()
    return {path: set(days) for path, days in rows}


def _files_read(con, first: dt.date, days: int) -> int:
    """Files DuckDB read for a query of ``days`` days from ``first`` (EXPLAIN ANALYZE's count)."""
    start = duckdb_literal(dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC))
    end = duckdb_literal(dt.datetime.combine(first + dt.timedelta(days=days), dt.time(), tzinfo=dt.UTC))
    plan = "\n".join(str(row[1]) for row in con.execute(
        "EXPLAIN ANALYZE SELECT count(DISTINCT distinct_id) FROM lake.posthog.events "
        f"WHERE timestamp >= {start} AND timestamp < {end}").fetchall())
    return sum(int(n) for n in re.findall(r"Total Files Read:\s*(\d+)", plan))


@pytest.fixture
def lake(stack):
    duckling = stack.new_duckling(TEAM, "layout")
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    with hook.attach(duckling, storage) as con:
        _build(con, storage)
        yield con, storage


def _pass(con, storage, max_merge_files: int):
    now = dt.datetime.now(dt.UTC)
    return maintain_lake(con, storage, TEAM, now=now, snapshot_retention=dt.timedelta(0),
                         orphans_before=now - dt.timedelta(days=7), max_merge_files=max_merge_files)


def test_maintenance_leaves_one_day_per_file_and_a_days_query_reads_one_file(lake):
    con, storage = lake
    before = _day_tallies(con)
    assert len(before) == len(DAYS)
    assert any(len(days) > 1 for days in _file_days(con).values())  # the legacy merge spans days
    assert _files_read(con, DAYS[3], 1) == 1 and _files_read(con, DAYS[13], 1) == 1 + APPENDED[DAYS[13]]

    first = _pass(con, storage, max_merge_files=8)  # bounded: the legacy file, then as many days as fit
    assert first.days_rewritten >= len(LEGACY) and first.merged_files <= 8 + len(LEGACY)
    second = _pass(con, storage, max_merge_files=500)
    assert first.days_rewritten + second.days_rewritten == len(LEGACY) + len(APPENDED)
    third = _pass(con, storage, max_merge_files=500)
    assert third.days_rewritten == 0 and third.merged_files == 0  # nothing left to do: passes are idempotent

    layout = _file_days(con)
    assert all(len(days) == 1 for days in layout.values()), {p: d for p, d in layout.items() if len(d) > 1}
    assert sorted(day for days in layout.values() for day in days) == DAYS  # exactly one file per day
    assert _day_tallies(con) == before  # rows and checksums unchanged
    for day in (DAYS[3], DAYS[13], RERUN, DAYS[-1]):
        assert _files_read(con, day, 1) == 1, day
    assert _files_read(con, DAYS[8], 3) == 3  # a range across the legacy file's end reads its 3 days


def test_a_rewrite_that_would_change_a_days_rows_commits_nothing(lake, monkeypatch):
    from airflow_provider_duckling.transfer import day_layout

    con, storage = lake
    before = _day_tallies(con)
    files = con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchone()
    real_execute = duckdb.DuckDBPyConnection.execute

    class Dropping:
        """The connection, but each day's copy loses its last row (ORDER BY … LIMIT)."""

        def execute(self, sql, *args):
            if sql.startswith("INSERT INTO") and "ORDER BY" in sql:
                sql = sql.replace("SELECT * FROM", "SELECT * FROM (SELECT * FROM", 1) + " OFFSET 1)"
            return real_execute(con, sql, *args)

    with pytest.raises(day_layout.LayoutError, match="wrote"):
        day_layout.keep_day_layout(Dropping(), EVENTS, max_files=500)  # type: ignore[arg-type]
    assert _day_tallies(con) == before
    assert con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'events', schema => 'posthog')"
                       ).fetchone() == files
