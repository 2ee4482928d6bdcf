"""Exporting a batch of days: ClickHouse writes each day's own file, many days per statement.

A month of history is one statement, ``INSERT INTO FUNCTION s3(…/{_partition_id}/{token}.parquet)
PARTITION BY formatDateTime(timestamp, 'year=%Y/month=%m/day=%d', 'UTC') SELECT …`` over the month's days:
one scan of the primary key's range for the team and days, one file per day under that day's own prefix
(the same layout a daily run writes). A day of more than ``rows_per_file`` rows is written by a statement
of its own, split into parts as a daily run splits it. A day without rows gets no file.

Before writing, the rows of each day are counted (in the thread beside the lake's pre-flight check);
afterwards each file's rows and size are read back from its Parquet footer, from the listing of that month's
days only (never the team's whole history): every day must hold exactly the rows counted for it, or the
attempt fails with nothing registered and a retry writes new files.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_duckling.access.storage import DucklingStorage
from airflow_provider_duckling.domain.partitions import DayRange, Partition, key_day
from airflow_provider_duckling.domain.tables import TableSpec, export_days_select, invalid_utf8_counts
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.transfer.export import (
    ROW_SETTINGS,
    SECRET_PARAMS,
    ExportError,
    ExportResult,
    RowCountMismatchError,
    count_alongside,
    export_statement,
    file_keys,
    invalid_by_column,
    log_invalid_utf8,
    merged_settings,
    planned_files,
    settings_clause,
    written_files,
)

log = logging.getLogger(__name__)

#: The expression that names a row's day directory; ClickHouse fills it in for ``{_partition_id}``.
DAY_DIRECTORY = "formatDateTime(timestamp, 'year=%Y/month=%m/day=%d', 'UTC')"


@dataclass(frozen=True)
class DayGroup:
    """Consecutive days of one calendar month written by one statement (each day its own file)."""

    first: dt.date
    last: dt.date
    days_with_rows: tuple[dt.date, ...]


def range_parameters(scope: DayRange | DayGroup, team_id: int) -> dict[str, Any]:
    """The bound parameters of a range SELECT: team, first day, day after the last."""
    return {"team_id": team_id, "first": scope.first.isoformat(), "end": (scope.last + dt.timedelta(days=1)).isoformat()}


@dataclass(frozen=True)
class DayCounts:
    """Rows per day of a batch (days without rows left out), and per text column the values that are not valid
    UTF-8 over the whole batch (columns with none left out)."""

    rows: dict[dt.date, int]
    invalid_utf8: dict[str, int]


def count_days(clickhouse: ClickHouseHook, table: TableSpec, scope: DayRange, settings: dict[str, Any] | None = None,
               ) -> DayCounts:
    """Rows per day of ``scope`` that the export will write, counted by the export's own SELECT and settings,
    so that each day's file can be compared with it; and the text values its ``toValidUTF8`` will change."""
    select = export_days_select(table, clickhouse.database, valid_utf8=False)
    sql = (f"SELECT toDate(timestamp, 'UTC') AS day, count(), {invalid_utf8_counts(table)} FROM (\n{select}\n) "
           f"GROUP BY day ORDER BY day\n{settings_clause(merged_settings(settings))}")
    with clickhouse.step("count_days"):
        rows = clickhouse.query_rows(sql, range_parameters(scope, scope.team_id))
    per_day = {(d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d))): int(n) for d, n, *_ in rows if int(n)}
    totals = [sum(int(row[2 + i] or 0) for row in rows) for i in range(len(table.text_columns))]
    return DayCounts(per_day, invalid_by_column(table, totals))


def plan(scope: DayRange, counts: dict[dt.date, int], rows_per_file: int) -> tuple[list[DayGroup], list[dt.date]]:
    """(groups of small days, each one statement; large days, each a statement of its own).

    A group is a run of consecutive days in one calendar month, none of them large, trimmed to the days
    with rows at its ends; a large day (more than ``rows_per_file`` rows) splits its month's run.
    """
    groups: list[DayGroup] = []
    large: list[dt.date] = []
    run: list[dt.date] = []

    def close() -> None:
        with_rows = tuple(d for d in run if counts.get(d, 0))
        if with_rows:
            groups.append(DayGroup(with_rows[0], with_rows[-1], with_rows))
        run.clear()

    for partition in scope.partitions:
        day = partition.day
        if counts.get(day, 0) > rows_per_file:
            close()
            large.append(day)
            continue
        if run and (day.month != run[-1].month or day.year != run[-1].year):
            close()
        run.append(day)
    close()
    return groups, large


def group_read_pattern(scope: DayRange, table: TableSpec, group: DayGroup, token: str) -> str:
    """The key pattern of a group's files: its month's directory, its days by name (the listing covers that
    month's days only, not the team's history)."""
    first = group.days_with_rows[0]
    days = [f"{d:%d}" for d in group.days_with_rows]
    day_part = days[0] if len(days) == 1 else "{" + ",".join(days) + "}"
    return f"{scope.prefix(table.name)}year={first:%Y}/month={first:%m}/day={day_part}/{token}.parquet"


def _read_group(clickhouse: ClickHouseHook, storage: DucklingStorage, scope: DayRange, table: TableSpec,
                group: DayGroup, token: str) -> dict[dt.date, tuple[str, int, int]]:
    """day → (key, rows, bytes) of each file the group's statement wrote, from the footers."""
    destination, params = storage.clickhouse_table_function(group_read_pattern(scope, table, group, token))
    found = clickhouse.query_rows(
        f"SELECT _path, count(), any(_size) FROM {destination} GROUP BY _path ORDER BY _path {settings_clause(ROW_SETTINGS)}",
        params,
    )
    written: dict[dt.date, tuple[str, int, int]] = {}
    for path, rows, size in found:
        named = key_day("/" + str(path))
        if named is None or named[1] != f"{token}.parquet":
            continue
        day = named[0]
        written[day] = (Partition(scope.team_id, day).object_key(table.name, token), int(rows), int(size or 0))
    return written


def export_days(
    clickhouse: ClickHouseHook,
    storage: DucklingStorage,
    table: TableSpec,
    scope: DayRange,
    token: str,
    settings: dict[str, Any] | None = None,
    *,
    dry_run: bool = False,
    rows_per_file: int | None = None,
    preflight: Callable[[], None] | None = None,
) -> ExportResult:
    """Write every day of ``scope`` to its own file(s) under keys unique to ``token``.

    :param dry_run: log the plan and each statement (credentials masked); write nothing.
    :param rows_per_file: a day of more rows is written by its own statement, in parts of about this many.
    :param preflight: the destination check that must pass before anything is written (runs while the
        days are counted).
    """
    from airflow_provider_duckling.registry.settings import rows_per_file as default_rows_per_file

    target = rows_per_file or default_rows_per_file()
    counted: DayCounts = count_alongside(clickhouse, table, scope, preflight, settings, counter=count_days)
    counts = counted.rows
    log_invalid_utf8(scope.key, table, counted.invalid_utf8)
    day_rows = {p.day.isoformat(): counts.get(p.day, 0) for p in scope.partitions}
    groups, large = plan(scope, counts, target)
    statements: list[tuple[str, str, dict[str, Any]]] = []  # (what, sql, params)
    for group in groups:
        destination, params = storage.clickhouse_table_function(f"{scope.prefix(table.name)}{{_partition_id}}/{token}.parquet")
        params.update(range_parameters(group, scope.team_id))
        sql = (f"INSERT INTO FUNCTION {destination}\nPARTITION BY {DAY_DIRECTORY}\n"
               f"{export_days_select(table, clickhouse.database)}\n{settings_clause(merged_settings(settings))}")
        statements.append((f"{group.first}..{group.last}", sql, params))
    large_keys: dict[dt.date, tuple[str, str]] = {}
    for day in large:
        partition = Partition(scope.team_id, day)
        files = planned_files(counts[day], target)
        key, pattern = large_keys[day] = file_keys(partition, table, token, files)
        sql, params = export_statement(clickhouse, storage, table, partition, key, settings, files)
        statements.append((day.isoformat(), sql, params))
    total = sum(counts.values())
    log.info("event=batch_planned partition=%s table=%s days=%d days_with_rows=%d rows_expected=%d statements=%d "
             "large_days=%d", scope.key, table.name, len(day_rows), len(counts), total, len(statements), len(large))
    if dry_run:
        for what, sql, params in statements:
            shown = {k: ("***" if k in SECRET_PARAMS else v) for k, v in params.items()}
            log.info("event=dry_run_export days=%s would run:\n%s\nwith parameters %s", what, sql, shown)
        keys = [Partition(scope.team_id, d).object_key(table.name, token) for d in sorted(counts) if d not in large_keys]
        keys += [large_keys[d][0] for d in large]
        return ExportResult(scope.key, table.name, [storage.uri(k) for k in keys], keys, total, 0, dry_run=True,
                            day_rows=day_rows, invalid_utf8=counted.invalid_utf8)
    for day in sorted(counts):
        storage.prepare(Partition(scope.team_id, day).object_key(table.name, token))
    for what, sql, params in statements:
        log.info("event=export_started partition=%s table=%s days=%s clickhouse=%s", scope.key, table.name, what,
                 "chdb" if clickhouse.is_embedded else "http")
        with clickhouse.step("export"):
            clickhouse.execute(sql, params)
    written: dict[dt.date, list[tuple[str, int, int]]] = {}
    with clickhouse.step("read_back"):
        for group in groups:
            for day, found in _read_group(clickhouse, storage, scope, table, group, token).items():
                written.setdefault(day, []).append(found)
        for day in large:
            written.setdefault(day, []).extend(written_files(clickhouse, storage, large_keys[day][1]))
    _check_days(scope, table, counts, written)
    keys = [key for day in sorted(written) for key, _, _ in written[day]]
    size = sum(b for files in written.values() for _, _, b in files)
    log.info("event=export_finished partition=%s table=%s days=%d rows=%d bytes=%d files=%d",
             scope.key, table.name, len(day_rows), total, size, len(keys))
    return ExportResult(scope.key, table.name, [storage.uri(k) for k in keys], keys, total, size, day_rows=day_rows,
                        invalid_utf8=counted.invalid_utf8)


def _check_days(scope: DayRange, table: TableSpec, counts: dict[dt.date, int],
                written: dict[dt.date, list[tuple[str, int, int]]]) -> None:
    """Every day with rows has its file(s) holding exactly the rows counted for it, and no other day has any."""
    missing = [d for d in sorted(counts) if d not in written]
    if missing:
        raise ExportError(f"{scope.key}: the export of {table.name} reported success but no file was found for "
                          f"{len(missing)} day(s), e.g. {missing[0]}")
    for day in sorted(written):
        rows = sum(r for _, r, _ in written[day])
        if rows != counts.get(day, 0):
            raise RowCountMismatchError(
                f"{scope.key}: the export of {table.name} wrote {rows} rows for {day} but {counts.get(day, 0)} were "
                "counted just before; nothing was registered"
            )
