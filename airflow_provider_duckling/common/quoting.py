"""Quoting helpers: the only way identifiers and literals reach SQL text in this package.

ClickHouse receives values (team ids, days, paths, credentials) as server-side bound parameters; these
helpers cover its identifiers and SETTINGS. DuckDB receives values as literals rendered by
:func:`duckdb_literal`: binding any Python value in DuckDB's client makes it import pandas and numpy
(about 0.2 s and 75 MiB in a fresh task process; ``bench/p2_export_wall.py`` measures it), which is more
than a whole registration costs.
"""

from __future__ import annotations

import datetime as dt
import re

_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,127}$")


def duckdb_ident(name: str) -> str:
    """Quote a DuckDB identifier: wrap in double quotes, double any embedded quote."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_str(value: str) -> str:
    """Quote a DuckDB string literal (for statements that take no parameters, such as ATTACH)."""
    return "'" + value.replace("'", "''") + "'"


def duckdb_literal(value: object) -> str:
    """A DuckDB literal that reads back as exactly ``value``: str, int, bool, None, a date, a timezone-aware
    datetime (TIMESTAMPTZ), or a list of these; anything else is refused."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return duckdb_str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"refusing a naive datetime as a DuckDB literal: {value!r}")
        return f"TIMESTAMPTZ {duckdb_str(value.isoformat())}"
    if isinstance(value, dt.date):
        return f"DATE {duckdb_str(value.isoformat())}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(duckdb_literal(item) for item in value) + "]"
    raise TypeError(f"no DuckDB literal for a {type(value).__name__}")


def clickhouse_ident(name: str) -> str:
    """Quote a ClickHouse identifier with backticks, escaping backslashes and backticks."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def clickhouse_str(value: str) -> str:
    """Quote a ClickHouse string literal, escaping backslashes and single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def clickhouse_setting_literal(name: str, value: object) -> str:
    """Render one ``name = value`` pair of a ClickHouse SETTINGS clause.

    :param name: a ClickHouse setting name (lower-case letters, digits and underscores).
    :param value: an int, float, bool or str; anything else is refused.
    """
    if not isinstance(name, str) or not _SETTING_NAME.match(name):
        raise ValueError(f"invalid ClickHouse setting name {name!r}: expected lower_snake_case")
    if isinstance(value, bool):
        rendered = "1" if value else "0"
    elif isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"invalid value for ClickHouse setting {name}: {value!r}")
        rendered = repr(value)
    elif isinstance(value, str):
        rendered = clickhouse_str(value)
    else:
        raise ValueError(
            f"invalid value for ClickHouse setting {name}: {type(value).__name__} (use a number, bool or string)"
        )
    return f"{name} = {rendered}"
