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
    source_tables: tuple[str, ...] = ()
    """The ClickHouse tables the export reads (for lineage)."""
    split_column: str = ""
    """Exported column whose hash spreads a large partition over several files."""

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
    source_tables=("events",),
    split_column="uuid",
)

PERSONS = TableSpec(
    name="persons",
    day_column="_timestamp",
    columns=(
        Column("team_id", "BIGINT", "toInt64(pd.team_id)"),
        Column("distinct_id", "VARCHAR", "pd.distinct_id"),
        Column("id", "VARCHAR", "toString(p.id)"),
        Column("properties", "VARCHAR", "p.properties"),
        Column("created_at", "TIMESTAMPTZ", _ts("p.created_at")),
        Column("is_identified", "BOOLEAN", "toBool(p.is_identified)"),
        Column("person_distinct_id_version", "BIGINT", "toInt64(pd.version)"),
        Column("person_version", "UBIGINT", "toUInt64(p.version)"),
        Column("_timestamp", "TIMESTAMPTZ", _ts("p._timestamp")),
        Column("_inserted_at", "TIMESTAMPTZ", "now64(6, 'UTC')"),
    ),
    source_tables=("person", "person_distinct_id2"),
    split_column="distinct_id",
)

TABLES: dict[str, TableSpec] = {EVENTS.name: EVENTS, PERSONS.name: PERSONS}

#: The per-duckling view that gives one current row per (team_id, distinct_id) across partitions.
PERSONS_CURRENT_VIEW = "persons_current"


def get_table(name: str) -> TableSpec:
    """Look up a table by name with a clear error for anything else."""
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}: expected one of {sorted(TABLES)}") from None


def _qualified(database: str, table: str) -> str:
    return f"{clickhouse_ident(database)}.{clickhouse_ident(table)}"


def _events_source(database: str, daily: bool) -> str:
    if not daily:
        raise ValueError("events are exported one UTC day at a time; a full export exists only for persons")
    return (
        f"FROM {_qualified(database, 'events')}\n"
        "WHERE team_id = {team_id:Int64}\n"
        "  AND toDate(timestamp) = {day:Date}\n"
        "  AND timestamp >= toDateTime64('1970-01-01 00:00:00', 6, 'UTC')"
    )


def _persons_source(database: str, daily: bool) -> str:
    # Latest version of each person and of each distinct_id mapping (argMax by version: the same answer
    # as FINAL, without depending on merges); tombstones (is_deleted = 1) excluded.
    person = (
        "SELECT team_id, id, argMax(properties, version) AS properties, argMax(is_identified, version) AS is_identified,\n"
        "           argMax(created_at, version) AS created_at, max(version) AS latest_version,\n"
        "           argMax(is_deleted, version) AS latest_is_deleted, argMax(_timestamp, version) AS latest_timestamp\n"
        f"    FROM {_qualified(database, 'person')} WHERE team_id = {{team_id:Int64}}\n"
        "    GROUP BY team_id, id HAVING latest_is_deleted = 0"
    )
    mapping = (
        "SELECT team_id, distinct_id, argMax(person_id, version) AS person_id, max(version) AS latest_version,\n"
        "           argMax(is_deleted, version) AS latest_is_deleted\n"
        f"    FROM {_qualified(database, 'person_distinct_id2')} WHERE team_id = {{team_id:Int64}}\n"
        "    GROUP BY team_id, distinct_id HAVING latest_is_deleted = 0"
    )
    where = "WHERE p._timestamp >= toDateTime('1970-01-01 00:00:00', 'UTC')"
    if daily:
        where += "\n  AND toDate(p._timestamp, 'UTC') = {day:Date}"
    return (
        f"FROM (\n    SELECT team_id, id, properties, is_identified, created_at, latest_version AS version,\n"
        f"           latest_timestamp AS _timestamp FROM ({person})\n) AS p\n"
        f"INNER JOIN (\n    SELECT team_id, distinct_id, person_id, latest_version AS version FROM ({mapping})\n) AS pd\n"
        "    ON pd.person_id = p.id AND pd.team_id = p.team_id\n"
        f"{where}"
    )


def export_select(table: TableSpec, database: str, daily: bool = True) -> str:
    """The SELECT of one team-day (``daily``) or of a whole team, with ``{team_id:Int64}`` and
    ``{day:Date}`` as bound parameters."""
    sources = {"events": _events_source, "persons": _persons_source}
    return f"SELECT\n    {table.select_list()}\n{sources[table.name](database, daily)}"

