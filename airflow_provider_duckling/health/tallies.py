"""A day on both sides: ClickHouse's rows for a team-day and the lake's, each as a row count and a cheap
checksum, and which days a duckling holds. ``duckling verify``, ``duckling status`` and the reconciliation
DAG all compare through this module, so the command line and the self-healing DAG cannot disagree.

The lake is always attached ``read_only`` (no owner mark, no table creation): looking never changes it. A
catalog that was never used reads as empty. The checksum is two sums both engines compute identically on
the exported values: epoch microseconds of the day column and the byte length of ``distinct_id`` — no
engine-specific hash (persons: an MD5 digest of each current answer, computed alike on both sides).

Checks read like the customer: an events day's tally also sums the byte length of **every** text column, so
DuckDB decodes each of the day's string column chunks as any query of the customer's would. A day whose files
DuckDB refuses (``Invalid string encoding found in Parquet file``, or any other read error) is a difference
(:attr:`Tally.unreadable`), never a match, and the re-run that repairs a differing day writes readable files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from airflow_provider_duckling.common.errors import LakeUnavailableError
from airflow_provider_duckling.common.quoting import clickhouse_ident, duckdb_ident, duckdb_literal
from airflow_provider_duckling.common.redaction import scrubbed_message
from airflow_provider_duckling.domain.tables import EVENTS, PERSONS, PERSONS_CURRENT_VIEW, get_table
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.transfer.lake import qualified, table_exists

if TYPE_CHECKING:
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

# DuckLake's answer when a read-only attach finds an empty catalog database: reachable, never used.
NEW_CATALOG = "creating a new DuckLake is explicitly disabled"
# DuckDB's answer when a read-only attach names an embedded catalog file that does not exist yet.
_NO_EMBEDDED_FILE = "in read-only mode: database does not exist"


def never_used(exc: BaseException) -> bool:
    """The attach failed only because the catalog was never initialised (PostgreSQL or embedded): the first
    run creates it, so readers see an empty lake and ``catalog validate`` calls it fine."""
    text = str(exc)
    return NEW_CATALOG in text or _NO_EMBEDDED_FILE in text


def embedded_catalog_missing(duckling: Duckling, hook: DuckLakeHook | None = None) -> Path | None:
    """For an embedded lake (``local_root``) whose catalog file does not exist yet, that file's path."""
    settings = (hook or DuckLakeHook()).settings(duckling)
    if settings.local_root is None:
        return None
    path = settings.local_root / f"{duckling.db_name}.ducklake"
    return None if path.exists() else path


@dataclass(frozen=True)
class Tally:
    """Rows and checksum of one team-day (or one team's current persons), on one side."""

    rows: int
    checksum: tuple[int, int]
    text_bytes: int = 0
    """Events: Σ byte length of every text column (decoding each of them); persons: 0."""
    unreadable: str | None = None
    """Why the lake's files of this day cannot be read (the reader's first line), or None."""

    def same_content(self, other: Tally) -> bool:
        """Checksums equal and both sides readable (the rows may still differ)."""
        return (self.checksum, self.text_bytes, self.unreadable, other.unreadable) == \
            (other.checksum, other.text_bytes, None, None)


@contextmanager
def attached(duckling: Duckling) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """The duckling attached read-only, or None when its catalog has never been initialised."""
    with ExitStack() as stack:
        try:
            con = stack.enter_context(DuckLakeHook().attach(duckling, read_only=True))
        except LakeUnavailableError as exc:
            if not never_used(exc):
                raise
            con = None
        yield con


def registered_days(duckling: Duckling, tables: tuple[str, ...]) -> dict[str, set[dt.date]]:
    """Per table, the UTC days holding at least one of the team's rows."""
    out: dict[str, set[dt.date]] = {t: set() for t in tables}
    with attached(duckling) as con:
        if con is None:
            return out
        for name in tables:
            table = get_table(name)
            if not table_exists(con, table):
                continue
            day = duckdb_ident(table.day_column)
            rows = con.execute(
                f"SELECT DISTINCT CAST({day} AS DATE) FROM {qualified(table)} WHERE team_id = {duckdb_literal(duckling.team_id)}"
            ).fetchall()
            out[name] = {d for (d,) in rows if d is not None}
    return out


#: Σ byte length of every events text column, in DuckDB: reading them makes DuckDB decode each column chunk.
LAKE_TEXT_BYTES = " + ".join(f"coalesce(strlen({duckdb_ident(c)}), 0)" for c in EVENTS.text_columns)
#: The same over the export SELECT's output, in ClickHouse (Int128: no overflow).
CLICKHOUSE_TEXT_BYTES = " + ".join(f"toInt128(ifNull(length({clickhouse_ident(c)}), 0))" for c in EVENTS.text_columns)


def _events_days_sql(team_id: int, first: dt.date, last: dt.date, decode: bool) -> str:
    """Per UTC day of [first, last]: rows, and with ``decode`` the checksums (reading every text column)."""
    day = duckdb_ident(EVENTS.day_column)
    start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    sums = (f", CAST(sum(epoch_us({day})) AS VARCHAR), CAST(sum(strlen(distinct_id)) AS VARCHAR), "
            f"CAST(sum({LAKE_TEXT_BYTES}) AS VARCHAR)") if decode else ""
    return (f"SELECT CAST({day} AS DATE) AS d, count(*){sums} FROM {qualified(EVENTS)} "
            f"WHERE team_id = {duckdb_literal(team_id)} AND {day} >= {duckdb_literal(start)} "
            f"AND {day} < {duckdb_literal(end)} GROUP BY d")


def _tally_row(n: object, ts: object, ids: object, text: object) -> Tally:
    return Tally(int(n), (int(ts or 0), int(ids or 0)), int(text or 0))


def day_tallies(duckling: Duckling, first: dt.date, last: dt.date) -> dict[dt.date, Tally]:
    """Events per UTC day in [first, last]: rows, Σ epoch µs of ``timestamp``, Σ bytes of ``distinct_id``,
    Σ bytes of every text column. When DuckDB cannot read some file, the days are read one by one and each
    day it cannot read is a :attr:`Tally.unreadable` tally (its rows from the file statistics' count)."""
    with attached(duckling) as con:
        if con is None or not table_exists(con, EVENTS):
            return {}
        try:
            rows = con.execute(_events_days_sql(duckling.team_id, first, last, decode=True)).fetchall()
            return {d: _tally_row(n, ts, ids, text) for d, n, ts, ids, text in rows}
        except duckdb.Error:
            pass  # some day's file cannot be read: find which, day by day
        tallies: dict[dt.date, Tally] = {}
        for d, n in con.execute(_events_days_sql(duckling.team_id, first, last, decode=False)).fetchall():
            try:
                ((_, n, ts, ids, text),) = con.execute(_events_days_sql(duckling.team_id, d, d, decode=True)).fetchall()
                tallies[d] = _tally_row(n, ts, ids, text)
            except duckdb.Error as exc:
                tallies[d] = Tally(int(n), (0, 0), 0, unreadable=scrubbed_message(exc))
        return tallies


#: The first 8 bytes of an MD5 over one current person row's answer, as :data:`PERSONS_TERM` computes it in ClickHouse.
PERSON_DIGEST = (
    "CAST('0x' || substr(md5(concat("
    + ", ".join(f"CAST(strlen({c}) AS VARCHAR), ':', {c}" for c in ("distinct_id", "id", "properties"))
    + ", ':', CAST(person_version AS VARCHAR))), 1, 16) AS UBIGINT)"
)


def current_persons_tally(duckling: Duckling) -> Tally | None:
    """The team's current persons (the ``persons_current`` view): rows, Σ of each row's answer digest
    (:data:`PERSON_DIGEST`), Σ bytes of ``distinct_id``; None when the lake has no persons yet."""
    with attached(duckling) as con:
        if con is None or not table_exists(con, PERSONS):
            return None
        try:
            n, digests, ids = con.execute(
                f"SELECT count(*), CAST(sum({PERSON_DIGEST}) AS VARCHAR), CAST(sum(strlen(distinct_id)) AS VARCHAR) "
                f"FROM {qualified(PERSONS_CURRENT_VIEW)} WHERE team_id = {duckdb_literal(duckling.team_id)}"
            ).fetchone()
        except duckdb.Error as exc:  # a file the customer's DuckDB cannot read either: a difference, not a crash
            return Tally(0, (0, 0), unreadable=scrubbed_message(exc))
    return Tally(int(n), (int(digests or 0), int(ids or 0)))


# The checksum's first term per table, over the export's own output columns (the lake's side: :func:`day_tallies`).
EVENTS_TERM = f"toUnixTimestamp64Micro({clickhouse_ident(EVENTS.day_column)})"
# Persons: Σ of the first 8 bytes of an MD5 over each row's answer (distinct_id, person id, properties,
# version; each text length-prefixed), so a distinct_id pointing at the wrong person or stale properties
# changes it. :data:`PERSON_DIGEST` is the same digest in DuckDB.
PERSONS_TERM = (
    "reinterpretAsUInt64(reverse(unhex(substring(hex(MD5(concat("
    + ", ".join(f"toString(length({c})), ':', {c}" for c in map(clickhouse_ident, ("distinct_id", "id", "properties")))
    + f", ':', toString({clickhouse_ident('person_version')})))), 1, 16))))"
)


def clickhouse_tally(hook: ClickHouseHook, select_sql: str, term: str, params: dict[str, object]) -> Tally:
    """Rows and checksum of the export SELECT's output (Int128 sums: no overflow, the same as DuckDB's HUGEINT);
    for events (``term`` is :data:`EVENTS_TERM`) also Σ bytes of every text column, as written."""
    ids = clickhouse_ident("distinct_id")
    text = f"toString(sum({CLICKHOUSE_TEXT_BYTES}))" if term == EVENTS_TERM else "'0'"
    ((rows, a, b, c),) = hook.query_rows(
        f"SELECT count(), toString(sum(toInt128({term}))), toString(sum(toInt128(length({ids})))), {text} "
        f"FROM ({select_sql})",
        params,
    )
    return Tally(int(rows), (int(a), int(b)), int(c))
