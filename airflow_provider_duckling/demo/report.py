"""Read-side helpers: what a duckling holds, per day, and a plain comparison table."""

from __future__ import annotations

import datetime as dt

from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal
from airflow_provider_duckling.domain.tables import get_table
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.transfer.lake import qualified, table_exists


def lake_day_counts(duckling: Duckling, table_name: str, ducklake_conn_id: str | None = None) -> dict[dt.date, int]:
    """Rows per UTC day of ``duckling``'s team in its lake table (empty if the table does not exist)."""
    table = get_table(table_name)
    with DuckLakeHook(ducklake_conn_id).attach(duckling) as con:
        if not table_exists(con, table):
            return {}
        day_col = duckdb_ident(table.day_column)
        rows = con.execute(
            f"SELECT CAST({day_col} AS DATE) AS d, count(*) FROM {qualified(table)} "
            f"WHERE team_id = {duckdb_literal(duckling.team_id)} GROUP BY d ORDER BY d"
        ).fetchall()
    return {d: int(n) for d, n in rows}


def print_comparison(rows: list[tuple[int, str, dt.date, int, int]]) -> None:
    """Print team | table | day | ClickHouse rows | duckling rows | status."""
    print(f"\n{'team':>6}  {'table':<8}  {'day':<10}  {'clickhouse':>10}  {'duckling':>10}  status")
    for team_id, table, day, expected, actual in rows:
        status = "ok" if expected == actual else "DIFFERS"
        print(f"{team_id:>6}  {table:<8}  {day.isoformat():<10}  {expected:>10}  {actual:>10}  {status}")
