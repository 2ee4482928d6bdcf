"""Quoting helpers: the only way identifiers and literals reach SQL text in this package.

Values that come from users (team ids, days, paths, credentials) are bound as parameters wherever the
engine allows; these helpers cover identifiers and the few literals that cannot be bound (DDL, SETTINGS).
"""

from __future__ import annotations

import re

_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,127}$")


def duckdb_ident(name: str) -> str:
    """Quote a DuckDB identifier: wrap in double quotes, double any embedded quote."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_str(value: str) -> str:
    """Quote a DuckDB string literal (for statements that take no parameters, such as ATTACH)."""
    return "'" + value.replace("'", "''") + "'"


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
