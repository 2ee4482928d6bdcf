"""Earliest-date discovery: where each team's history starts in ClickHouse, per table.

Runs in a task (never at DAG-parse time). Pre-1970 timestamps are ignored and dates are clamped to the
configured floor, so one bad event cannot schedule decades of empty runs.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow_provider_duckling.export import ROW_SETTINGS, settings_clause
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.quoting import clickhouse_ident
from airflow_provider_duckling.state import StartDates

log = logging.getLogger(__name__)

_EARLIEST = {
    # toDate32, not toDate: toDate wraps a row after 2149-06-06 onto a 1970 day (and pre-1970 ones onto 2149).
    "events": ("events", "toDate32(timestamp)", "timestamp >= toDateTime64('1970-01-01 00:00:00', 6, 'UTC')"),
    "persons": ("person", "toDate(_timestamp, 'UTC')", "_timestamp >= toDateTime('1970-01-01 00:00:00', 'UTC')"),
}


def discover_start_dates(clickhouse: ClickHouseHook, team_ids: list[int], floor: dt.date, tables: tuple[str, ...]) -> StartDates:
    """The first day with data per table and team (teams without data are left out)."""
    found: StartDates = {}
    if not team_ids:
        return found
    for table in tables:
        source, day_expr, valid = _EARLIEST[table]
        rows = clickhouse.query_rows(
            f"SELECT team_id, min({day_expr}) FROM {clickhouse_ident(clickhouse.database)}.{clickhouse_ident(source)} "
            f"WHERE team_id IN {{teams:Array(Int64)}} AND {valid} GROUP BY team_id {settings_clause(ROW_SETTINGS)}",
            {"teams": "[" + ",".join(str(int(t)) for t in team_ids) + "]"},
        )
        for team_id, first in rows:
            first = first if isinstance(first, dt.date) else dt.date.fromisoformat(str(first))
            found.setdefault(table, {})[int(team_id)] = max(first, floor)
            log.info("event=start_date_discovered table=%s team=%s first_day=%s start=%s", table, team_id, first,
                     max(first, floor))
    return found
