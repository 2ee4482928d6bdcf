"""Each exported table, described once: its lake columns, the ClickHouse SELECT that writes them, and the
column that places a row in a UTC day.

The export SELECT casts every column to the lake's type (posthog-tables.md): UUIDs become strings,
timestamps become microsecond UTC timestamps (read by DuckDB as TIMESTAMPTZ), enums become strings.
Values are bound as ClickHouse query parameters (``{team_id:Int64}``), never pasted in.

A ClickHouse ``String`` holds any bytes, but DuckDB refuses to read a Parquet string column chunk that is not
valid UTF-8 (every query touching that column of that file fails). So every column read from a ``String``
(:attr:`Column.text`) is exported through ``toValidUTF8``, which replaces each invalid sequence with U+FFFD
and leaves valid text byte for byte; :func:`invalid_utf8_counts` counts the values it changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_duckling.common.quoting import clickhouse_ident
from airflow_provider_duckling.domain.persons import COLUMN_EXPRESSIONS, state_source

LAKE_SCHEMA = "posthog"


@dataclass(frozen=True)
class Column:
    """One lake column and the ClickHouse expression that produces it."""

    name: str
    lake_type: str
    clickhouse_expr: str
    text: bool = False
    """Read from a ClickHouse ``String`` (any bytes): exported through ``toValidUTF8``."""

    def exported(self, valid_utf8: bool = True) -> str:
        """The column's expression in the export SELECT (``valid_utf8=False``: the bytes as stored)."""
        return f"toValidUTF8({self.clickhouse_expr})" if self.text and valid_utf8 else self.clickhouse_expr


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
        from airflow_provider_duckling.common.quoting import duckdb_ident

        cols = ", ".join(f"{duckdb_ident(c.name)} {c.lake_type}" for c in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {duckdb_ident(catalog)}.{duckdb_ident(LAKE_SCHEMA)}."
            f"{duckdb_ident(self.name)} ({cols})"
        )

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The columns read from a ClickHouse ``String``, which may hold bytes that are not UTF-8."""
        return tuple(c.name for c in self.columns if c.text)

    def select_list(self, valid_utf8: bool = True) -> str:
        return ",\n    ".join(f"{c.exported(valid_utf8)} AS {clickhouse_ident(c.name)}" for c in self.columns)


def _ts(expr: str) -> str:
    return f"toDateTime64({expr}, 6, 'UTC')"


_GROUPS = range(5)

#: Alias of the events table in the export SELECT. Every stored column is read through it: a WHERE on a bare
#: name that is also an output alias (``… AS timestamp``) binds to the alias under ClickHouse's default
#: ``prefer_column_name_to_alias = 0`` and to the column under 1, so a setting would change the rows, and the
#: primary key could not prune (every granule of the team read).
EVENTS_ALIAS = "ev"


def _ev(column: str) -> str:
    """A stored column of the events table, qualified with :data:`EVENTS_ALIAS`."""
    return f"{EVENTS_ALIAS}.{clickhouse_ident(column)}"


EVENTS = TableSpec(
    name="events",
    day_column="timestamp",
    columns=(
        Column("uuid", "VARCHAR", f"toString({_ev('uuid')})"),
        Column("event", "VARCHAR", _ev("event"), text=True),
        Column("properties", "VARCHAR", _ev("properties"), text=True),
        Column("timestamp", "TIMESTAMPTZ", _ts(_ev("timestamp"))),
        Column("team_id", "BIGINT", f"toInt64({_ev('team_id')})"),
        Column("project_id", "BIGINT", f"toInt64({_ev('team_id')})"),
        Column("distinct_id", "VARCHAR", _ev("distinct_id"), text=True),
        Column("elements_chain", "VARCHAR", _ev("elements_chain"), text=True),
        Column("created_at", "TIMESTAMPTZ", _ts(_ev("created_at"))),
        Column("person_id", "VARCHAR", f"toString({_ev('person_id')})"),
        Column("person_created_at", "TIMESTAMPTZ", _ts(_ev("person_created_at"))),
        Column("person_properties", "VARCHAR", _ev("person_properties"), text=True),
        *(Column(f"group{i}_properties", "VARCHAR", _ev(f"group{i}_properties"), text=True) for i in _GROUPS),
        *(Column(f"group{i}_created_at", "TIMESTAMPTZ", _ts(_ev(f"group{i}_created_at"))) for i in _GROUPS),
        Column("person_mode", "VARCHAR", f"toString({_ev('person_mode')})"),
        Column("historical_migration", "BOOLEAN", f"toBool({_ev('historical_migration')})"),
        Column("_inserted_at", "TIMESTAMPTZ", "now64(6, 'UTC')"),
    ),
    source_tables=("events",),
    split_column="uuid",
)

PERSONS = TableSpec(
    name="persons",
    day_column="_timestamp",
    columns=tuple(
        Column(name, lake_type, COLUMN_EXPRESSIONS[name], text=name in ("distinct_id", "properties"))
        for name, lake_type in (
            ("team_id", "BIGINT"), ("distinct_id", "VARCHAR"), ("id", "VARCHAR"), ("properties", "VARCHAR"),
            ("created_at", "TIMESTAMPTZ"), ("is_identified", "BOOLEAN"), ("person_distinct_id_version", "BIGINT"),
            ("person_version", "UBIGINT"), ("_timestamp", "TIMESTAMPTZ"), ("_inserted_at", "TIMESTAMPTZ"),
        )
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


#: The UTC day ``{day:Date}`` as a half-open range of DateTime64(6, 'UTC') constants: a Date taken to a
#: DateTime64 in an explicit zone, so ``session_timezone`` cannot move it. Compared with the stored column it is
#: exact for every row (no ``toDate()`` of the column, which wraps pre-1970 values to 2149 and overflows after
#: 2149-06-06), and the primary key ``(team_id, toDate(timestamp), …)`` selects only the day's granules.
DAY_START = "toDateTime64({day:Date}, 6, 'UTC')"
DAY_END = f"({DAY_START} + INTERVAL 1 DAY)"


def events_day_source(database: str) -> str:
    """``FROM … WHERE …`` of one team-day of events: stored columns qualified, the day a half-open range."""
    return (
        f"FROM {_qualified(database, 'events')} AS {EVENTS_ALIAS}\n"
        f"WHERE {_ev('team_id')} = {{team_id:Int64}}\n"
        f"  AND {_ev('timestamp')} >= {DAY_START}\n"
        f"  AND {_ev('timestamp')} < {DAY_END}"
    )


#: Consecutive UTC days ``{first:Date}`` ≤ day < ``{end:Date}`` (a batch of history), exact and pruned like one day.
DAYS_START = "toDateTime64({first:Date}, 6, 'UTC')"
DAYS_END = "toDateTime64({end:Date}, 6, 'UTC')"


def events_days_source(database: str) -> str:
    """``FROM … WHERE …`` of consecutive team-days of events (``{first:Date}`` to ``{end:Date}``, end excluded)."""
    return (
        f"FROM {_qualified(database, 'events')} AS {EVENTS_ALIAS}\n"
        f"WHERE {_ev('team_id')} = {{team_id:Int64}}\n"
        f"  AND {_ev('timestamp')} >= {DAYS_START}\n"
        f"  AND {_ev('timestamp')} < {DAYS_END}"
    )


def export_days_select(table: TableSpec, database: str, valid_utf8: bool = True) -> str:
    """The SELECT of consecutive team-days (events only: persons history is one full export), with
    ``{team_id:Int64}``, ``{first:Date}`` and ``{end:Date}`` bound."""
    if table.name != EVENTS.name:
        raise ValueError(f"{table.name} history is one full export, not a range of days")
    return f"SELECT\n    {table.select_list(valid_utf8)}\n{events_days_source(database)}"


def _events_source(database: str, daily: bool) -> str:
    if not daily:
        raise ValueError("events are exported one UTC day at a time; a full export exists only for persons")
    return events_day_source(database)


def export_select(table: TableSpec, database: str, daily: bool = True, valid_utf8: bool = True) -> str:
    """The SELECT of one team-day (``daily``) or of a whole team, with ``{team_id:Int64}`` and
    ``{day:Date}`` as bound parameters.

    :param valid_utf8: text columns through ``toValidUTF8`` (what the export writes); ``False``: as stored,
        for counting what that changes.
    """
    sources = {"events": _events_source, "persons": state_source}
    return f"SELECT\n    {table.select_list(valid_utf8)}\n{sources[table.name](database, daily)}"


def invalid_utf8_counts(table: TableSpec) -> str:
    """Aggregates, over the rows of an export SELECT made with ``valid_utf8=False``, of how many values of
    each text column (in :attr:`TableSpec.text_columns` order) are not valid UTF-8: the values the export's
    ``toValidUTF8`` changes. NULLs count as valid."""
    return ", ".join(f"countIf(NOT isValidUTF8({clickhouse_ident(c)}))" for c in table.text_columns)

