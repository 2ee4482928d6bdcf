"""Each exported table, described once: its lake columns, the ClickHouse SELECT that writes them, and the
column that places a row in a UTC day.

The export SELECT casts every column to the lake's type (posthog-tables.md): UUIDs become strings,
timestamps become microsecond UTC timestamps (read by DuckDB as TIMESTAMPTZ), enums become strings.
Values are bound as ClickHouse query parameters (``{team_id:Int64}``), never pasted in.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_duckling.quoting import clickhouse_ident

LAKE_SCHEMA = "posthog"


@dataclass(frozen=True)
class Column:
    """One lake column and the ClickHouse expression that produces it."""

    name: str
    lake_type: str
    clickhouse_expr: str


@dataclass(frozen=True)
class TableSpec:
    """What the provider needs to know to move one table."""

    name: str
    columns: tuple[Column, ...]
    day_column: str
    """Lake column whose UTC day assigns a row to a daily partition."""
    source_tables: tuple[str, ...]

    @property
    def lake_columns(self) -> dict[str, str]:
        return {c.name: c.lake_type for c in self.columns}

    def lake_ddl(self, catalog: str) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for this table in the lake (unpartitioned: see posthog-tables.md)."""
        from airflow_provider_duckling.quoting import duckdb_ident

        cols = ", ".join(f"{duckdb_ident(c.name)} {c.lake_type}" for c in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {duckdb_ident(catalog)}.{duckdb_ident(LAKE_SCHEMA)}."
            f"{duckdb_ident(self.name)} ({cols})"
        )

    def select_list(self) -> str:
        return ",\n    ".join(f"{c.clickhouse_expr} AS {clickhouse_ident(c.name)}" for c in self.columns)


def _ts(expr: str) -> str:
    return f"toDateTime64({expr}, 6, 'UTC')"


_GROUPS = range(5)

EVENTS = TableSpec(
    name="events",
    day_column="timestamp",
    source_tables=("events",),
    columns=(
        Column("uuid", "VARCHAR", "toString(uuid)"),
        Column("event", "VARCHAR", "event"),
        Column("properties", "VARCHAR", "properties"),
        Column("timestamp", "TIMESTAMPTZ", _ts("timestamp")),
        Column("team_id", "BIGINT", "toInt64(team_id)"),
        Column("project_id", "BIGINT", "toInt64(team_id)"),
        Column("distinct_id", "VARCHAR", "distinct_id"),
        Column("elements_chain", "VARCHAR", "elements_chain"),
        Column("created_at", "TIMESTAMPTZ", _ts("created_at")),
        Column("person_id", "VARCHAR", "toString(person_id)"),
        Column("person_created_at", "TIMESTAMPTZ", _ts("person_created_at")),
        Column("person_properties", "VARCHAR", "person_properties"),
        *(Column(f"group{i}_properties", "VARCHAR", f"group{i}_properties") for i in _GROUPS),
        *(Column(f"group{i}_created_at", "TIMESTAMPTZ", _ts(f"group{i}_created_at")) for i in _GROUPS),
        Column("person_mode", "VARCHAR", "toString(person_mode)"),
        Column("historical_migration", "BOOLEAN", "toBool(historical_migration)"),
        Column("_inserted_at", "TIMESTAMPTZ", "now64(6, 'UTC')"),
    ),
)

TABLES: dict[str, TableSpec] = {EVENTS.name: EVENTS}


def get_table(name: str) -> TableSpec:
    """Look up a table by name with a clear error for anything else."""
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}: expected one of {sorted(TABLES)}") from None


def daily_export_select(table: TableSpec, database: str) -> str:
    """The SELECT of one team-day, with ``{team_id:Int64}`` and ``{day:Date}`` as bound parameters."""
    if table.name != "events":
        raise ValueError(f"no daily export defined for {table.name!r}")
    return (
        f"SELECT\n    {table.select_list()}\n"
        f"FROM {clickhouse_ident(database)}.{clickhouse_ident('events')}\n"
        "WHERE team_id = {team_id:Int64}\n"
        "  AND toDate(timestamp) = {day:Date}\n"
        "  AND timestamp >= toDateTime64('1970-01-01 00:00:00', 6, 'UTC')"
    )
