"""What the export pre-flight needs from a duckling's catalog, read straight from DuckLake's metadata tables.

Before exporting, the task only has to know whose catalog it is (data path and owner mark) and which
columns the lake table has. Attaching the lake for that loads DuckDB's DuckLake extension (and, for a
PostgreSQL catalog, postgres_scanner and httpfs) and has DuckLake load its catalog; two plain queries on
its metadata tables answer the same, with psycopg2 for a PostgreSQL catalog and with plain DuckDB (no
extension) for an embedded one. Neither query binds a parameter: binding a Python value in DuckDB's client
imports pandas, which costs a task process more than the whole read.

Only what can be answered exactly is answered: a lake column of a type this module does not map (nested
types) gives ``None``, and the caller attaches the lake and asks DuckDB instead. A catalog of another DuckLake
format than the one our DuckDB writes is refused (:class:`CatalogVersionRefused`): DuckDB 1.5.5 attaches only
its own format, so a catalog a newer DuckDB upgraded (or an older one made) could only fail later, after the
export had written its files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_duckling.common.redaction import scrubbed_message

#: The DuckLake catalog format DuckDB 1.5.5's ducklake extension writes into a new catalog (its
#: ``ducklake_metadata`` key ``version``; measured for PostgreSQL and DuckDB-file catalogs) and the only one it
#: attaches: an older one needs ``AUTOMATIC_MIGRATION``, a newer one is refused (docs/compatibility.md).
WRITTEN_VERSION = "1.0"
#: DuckLake catalog format versions whose metadata tables this module reads.
KNOWN_VERSIONS = frozenset({WRITTEN_VERSION})
# "1.0", "1.1", "0.10", "0.4-dev1" (a pre-release sorts before its release).
_VERSION = re.compile(r"(\d{1,9})\.(\d{1,9})(?:\.(\d{1,9}))?(?:-dev(\d{1,9}))?")

# DuckLake's type names → DuckDB's (as ``lake.normalize_type`` spells them). Nested types are not here.
_TYPES = {
    "boolean": "BOOLEAN", "int8": "TINYINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT",
    "int128": "HUGEINT", "uint8": "UTINYINT", "uint16": "USMALLINT", "uint32": "UINTEGER", "uint64": "UBIGINT",
    "uint128": "UHUGEINT", "float32": "FLOAT", "float64": "DOUBLE", "date": "DATE", "time": "TIME",
    "timetz": "TIME WITH TIME ZONE", "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ",
    "timestamp_s": "TIMESTAMP_S", "timestamp_ms": "TIMESTAMP_MS", "timestamp_ns": "TIMESTAMP_NS",
    "interval": "INTERVAL", "varchar": "VARCHAR", "blob": "BLOB", "uuid": "UUID", "json": "JSON",
}
_DECIMAL = re.compile(r"decimal\((\d+),(\d+)\)")


def metadata_sql(database: str = "") -> str:
    """The catalog-wide settings (format version, data path, owner mark); ``database`` is the quoted name
    of the metadata database with a trailing dot, when it is attached under one."""
    return f"SELECT key, value FROM {database}ducklake_metadata WHERE scope IS NULL"


def columns_sql(database: str = "") -> str:
    """Every current top-level column of every current table (a lake holds a handful of tables)."""
    return f"""
SELECT s.schema_name, t.table_name, c.column_name, c.column_type
FROM {database}ducklake_column c
JOIN {database}ducklake_table t ON t.table_id = c.table_id AND t.end_snapshot IS NULL
JOIN {database}ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
WHERE c.end_snapshot IS NULL AND c.parent_column IS NULL
ORDER BY t.table_id, c.column_order
"""


def table_comment_sql(schema: str, table: str, database: str = "") -> str:
    """The current comment of ``schema.table`` (where persons record their full export's time)."""
    from airflow_provider_duckling.common.quoting import duckdb_literal

    return f"""
SELECT g.value
FROM {database}ducklake_tag g
JOIN {database}ducklake_table t ON t.table_id = g.object_id AND t.end_snapshot IS NULL
JOIN {database}ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
WHERE g.key = 'comment' AND g.end_snapshot IS NULL
  AND s.schema_name = {duckdb_literal(schema)} AND t.table_name = {duckdb_literal(table)}
"""


#: Tables whose catalog facts include the table's comment (persons: the time of their full export).
COMMENTED_TABLES = frozenset({"persons"})


def version_key(version: str) -> tuple[int, int, int, int, int] | None:
    """A DuckLake format version as numbers that sort as versions do ('0.10' after '0.9', '0.4-dev1' before
    '0.4'); ``None`` for text that is not a version."""
    match = _VERSION.fullmatch(version.strip())
    if match is None:
        return None
    major, minor, patch, dev = match.groups()
    return int(major), int(minor), int(patch or 0), 0 if dev else 1, int(dev or 0)


class CatalogVersionRefused(Exception):
    """The catalog is of a DuckLake format other than :data:`WRITTEN_VERSION` (newer, older, or not a version)."""

    def __init__(self, version: str) -> None:
        super().__init__(version)
        self.version = version


def check_version(version: str | None) -> None:
    """Accept our own format, and a catalog that records none (DuckDB then decides, as before).

    :raises CatalogVersionRefused: any other recorded version.
    """
    if version is None or version_key(version) == version_key(WRITTEN_VERSION):
        return
    raise CatalogVersionRefused(version)


def version_refusal(whose: str, version: str) -> str:
    """The one line that refuses ``whose`` catalog at ``version``: both versions, what to do, nothing written.

    :param whose: e.g. ``duckling 7's catalog (lake_7 on db.internal)``.
    :param version: the catalog's ``ducklake_metadata`` version, as recorded.
    """
    import duckdb

    from airflow_provider_duckling.common.errors import quoted

    ours, engine = WRITTEN_VERSION, f"DuckDB {duckdb.__version__}"
    key, own = version_key(version), version_key(WRITTEN_VERSION)
    if key is None:
        return (f"{whose} records DuckLake version {quoted(version)}, which is not a DuckLake version; this provider's "
                f"{engine} writes DuckLake {ours}: check the catalog's ducklake_metadata table; nothing was written")
    if own is not None and key > own:
        return (f"{whose} is DuckLake {version} (written by a newer DuckDB); this provider's {engine} understands "
                f"DuckLake {ours} at most: upgrade airflow-provider-duckling to a release whose DuckDB reads DuckLake "
                f"{version} (see docs/compatibility.md); nothing was written")
    return (f"{whose} is DuckLake {version} (written by an older DuckDB); this provider's {engine} writes DuckLake "
            f"{ours} and migrates a catalog only when asked: migrate it once with ATTACH … (AUTOMATIC_MIGRATION TRUE) "
            f"after checking the customer's readers (see docs/compatibility.md); nothing was written")


class CatalogUnreadable(Exception):
    """The catalog could not be reached or read (the database driver's first line of the reason, scrubbed)."""


def _unreadable(exc: Exception) -> CatalogUnreadable:
    return CatalogUnreadable(scrubbed_message(exc))


@dataclass(frozen=True)
class CatalogFacts:
    """A catalog as the export pre-flight sees it."""

    #: ``False``: the catalog has no DuckLake metadata yet (a new lake; the register task initialises it).
    initialised: bool
    data_path: str | None = None
    owner: str | None = None
    #: The table's columns and DuckDB types, in order; empty when it does not exist.
    columns: dict[str, str] = field(default_factory=dict)
    #: The table's comment (persons only: it records the time of the team's full export).
    comment: str | None = None


def duckdb_type(ducklake_type: str) -> str | None:
    """DuckDB's name for a DuckLake column type; ``None`` for a type not mapped here (nested ones)."""
    kind = ducklake_type.strip().lower()
    decimal = _DECIMAL.fullmatch(kind.replace(" ", ""))
    if decimal:
        return f"DECIMAL({decimal.group(1)},{decimal.group(2)})"
    return _TYPES.get(kind)


def catalog_facts(
    metadata: Iterable[tuple[Any, Any]], columns: Iterable[tuple[Any, Any, Any, Any]], schema: str, table: str,
    owner_key: str, comment: Iterable[tuple[Any]] = (),
) -> CatalogFacts | None:
    """The facts about ``schema.table`` from the rows of :func:`metadata_sql` and :func:`columns_sql`;
    ``None`` when they cannot be stated exactly (an unmapped column type, or no version recorded).

    :raises CatalogVersionRefused: the catalog is of another DuckLake format (see :func:`check_version`).
    """
    values = {str(key): (None if value is None else str(value)) for key, value in metadata}
    check_version(values.get("version"))
    if values.get("version") not in KNOWN_VERSIONS:
        return None
    found: dict[str, str] = {}
    for schema_name, table_name, column, kind in columns:
        if schema_name != schema or table_name != table:
            continue
        mapped = duckdb_type(str(kind))
        if mapped is None:
            return None
        found[str(column)] = mapped
    comments = [str(value) for (value,) in comment if value is not None]
    return CatalogFacts(True, values.get("data_path"), values.get(owner_key), found, comments[0] if comments else None)


def read_embedded(path: Path, schema: str, table: str, owner_key: str) -> CatalogFacts | None:
    """Read an embedded lake's catalog (a DuckDB file) read-only, without loading any extension.

    :raises CatalogUnreadable: e.g. the file is locked by a writer.
    """
    import duckdb

    if not path.exists():
        return CatalogFacts(initialised=False)
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise _unreadable(exc) from None
    try:
        try:
            metadata = con.execute(metadata_sql()).fetchall()
        except duckdb.CatalogException:
            return CatalogFacts(initialised=False)
        comment = con.execute(table_comment_sql(schema, table)).fetchall() if table in COMMENTED_TABLES else []
        return catalog_facts(metadata, con.execute(columns_sql()).fetchall(), schema, table, owner_key, comment)
    except duckdb.Error as exc:
        raise _unreadable(exc) from None
    finally:
        con.close()


def read_postgres(connect_kwargs: dict[str, Any], schema: str, table: str, owner_key: str) -> CatalogFacts | None:
    """Read a PostgreSQL catalog in one read-only session (libpq keywords in ``connect_kwargs``; the
    password travels as one of them, never in a connection string).

    :raises CatalogUnreadable: the server cannot be reached, refuses the login, or the read fails.
    """
    import psycopg2
    import psycopg2.errors

    try:
        con = psycopg2.connect(**connect_kwargs)
    except psycopg2.Error as exc:
        raise _unreadable(exc) from None
    try:
        con.set_session(readonly=True, autocommit=True)
        with con.cursor() as cur:
            try:
                cur.execute(metadata_sql())
            except psycopg2.errors.UndefinedTable:
                return CatalogFacts(initialised=False)
            metadata = cur.fetchall()
            cur.execute(columns_sql())
            columns = cur.fetchall()
            comment: list[tuple[Any]] = []
            if table in COMMENTED_TABLES:
                cur.execute(table_comment_sql(schema, table))
                comment = cur.fetchall()
            return catalog_facts(metadata, columns, schema, table, owner_key, comment)
    except psycopg2.Error as exc:
        raise _unreadable(exc) from None
    finally:
        con.close()


def read_attached(con: Any, database: str, schema: str, table: str, owner_key: str) -> CatalogFacts | None:
    """The same facts through a DuckDB connection that has the lake attached, its metadata database named
    ``database`` (quoted). DuckLake's own catalog load is left to the statement that needs it."""
    prefix = f"{database}."
    comment = con.execute(table_comment_sql(schema, table, prefix)).fetchall() if table in COMMENTED_TABLES else []
    return catalog_facts(con.execute(metadata_sql(prefix)).fetchall(), con.execute(columns_sql(prefix)).fetchall(),
                         schema, table, owner_key, comment)
