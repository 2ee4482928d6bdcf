"""Exporting one partition: ClickHouse writes Parquet straight to the duckling's storage.

No row passes through this process: it sends one ``INSERT INTO FUNCTION s3(...) SELECT ...`` and reads
the written file's row count and size back from ClickHouse (Parquet footer, no data scan).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_duckling.access.storage import DucklingStorage
from airflow_provider_duckling.common.errors import ConfigurationError, TransientError, quoted
from airflow_provider_duckling.common.quoting import clickhouse_ident, clickhouse_setting_literal
from airflow_provider_duckling.domain.partitions import Partition, Scope
from airflow_provider_duckling.domain.tables import TableSpec, export_select, invalid_utf8_counts
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

log = logging.getLogger(__name__)

#: Settings every export runs with; user settings are merged over them.
DEFAULT_CLICKHOUSE_SETTINGS: dict[str, Any] = {
    "s3_truncate_on_insert": 1,  # a retry of the same attempt may rewrite its own, never-registered object
    "engine_file_truncate_on_insert": 1,  # the same for file() in embedded mode
    "output_format_parquet_string_as_string": 1,  # strings as UTF8 so DuckDB reads VARCHAR, not BLOB
    "output_format_parquet_compression_method": "zstd",
    "output_format_parquet_row_group_size": 1_000_000,
    # ClickHouse holds a whole row group in memory before it writes it: 16 MiB (before compression; about 60k
    # sample events) kept its peak at +0.25 GB instead of +0.8 GB for a 1M-row group (bench P9), and DuckDB reads
    # such files faster (a scan per row group and core).
    "output_format_parquet_row_group_size_bytes": 16 << 20,
    "max_execution_time": 3600,
}


#: Settings that decide which rows a statement answers: a result limit or offset, extra filters, a limit
#: that stops reading or answering early and keeps what it has (``*_overflow_mode = 'break'``/``'any'``), a
#: deletion mask ignored, unavailable shards skipped, FINAL applied, a cancel answered with partial results,
#: a count of no rows answered with no row. They come last in every export's and count's SETTINGS, after the
#: defaults, the user's settings and (being in the query) over any server profile, so the day's rows are the
#: same whatever those say. A user value other than these is refused (a limit with ``'throw'`` still fails).
ROW_SETTINGS: dict[str, Any] = {
    "limit": 0,
    "offset": 0,
    "additional_table_filters": "{}",
    "additional_result_filter": "",
    "read_overflow_mode": "throw",
    "read_overflow_mode_leaf": "throw",
    "result_overflow_mode": "throw",
    "timeout_overflow_mode": "throw",
    "timeout_overflow_mode_leaf": "throw",
    "group_by_overflow_mode": "throw",
    "set_overflow_mode": "throw",
    "join_overflow_mode": "throw",
    "distinct_overflow_mode": "throw",
    "sort_overflow_mode": "throw",
    "transfer_overflow_mode": "throw",
    "apply_deleted_mask": 1,
    "final": 0,
    "skip_unavailable_shards": 0,
    "partial_result_on_first_cancel": 0,
    "empty_result_for_aggregation_by_empty_set": 0,
}


def _same_value(given: Any, forced: Any) -> bool:
    """Whether a user's value means the forced one (``'THROW'`` is ``'throw'``, ``False`` is ``0``)."""
    if isinstance(forced, str):
        return isinstance(given, str) and given.strip().lower() == forced
    return isinstance(given, int | float) and given == forced


#: What the provider sets on every statement itself (:mod:`~airflow_provider_duckling.access.workload`): a run
#: cannot replace it, or ``system.query_log`` would no longer attribute the statement.
PROVIDER_SETTINGS = ("log_comment", "query_id")


def resource_limits() -> dict[str, Any]:
    """``[duckling] export_max_threads`` / ``export_max_memory_usage`` as ClickHouse settings (unset: none)."""
    from airflow_provider_duckling.registry.settings import export_max_memory_usage, export_max_threads

    limits = {"max_threads": export_max_threads(), "max_memory_usage": export_max_memory_usage()}
    return {name: value for name, value in limits.items() if value is not None}


def merged_settings(user: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults, then ``[duckling]``'s resource limits, then the user's settings, then :data:`ROW_SETTINGS`
    (last, so they win); each name and value validated, and a user value that would change which rows are
    exported, or replace the provider's ``log_comment``, refused."""
    if user is not None and not isinstance(user, dict):
        raise ConfigurationError(f"clickhouse_settings must be a mapping of setting → value, got {type(user).__name__}")
    for name in PROVIDER_SETTINGS:
        if name in (user or {}):
            raise ConfigurationError(
                f"clickhouse_settings: {name} is set by the provider on every statement (team, table, day and run, "
                "for system.query_log and KILL QUERY); leave it out"
            )
    for name, value in (user or {}).items():
        if name in ROW_SETTINGS and not _same_value(value, ROW_SETTINGS[name]):
            raise ConfigurationError(
                f"clickhouse_settings: {name} = {quoted(value)} would change which rows are exported; "
                f"only {ROW_SETTINGS[name]!r} is allowed"
            )
    settings = {name: value for name, value in {**DEFAULT_CLICKHOUSE_SETTINGS, **resource_limits(), **(user or {})}.items()
                if name not in ROW_SETTINGS}
    settings.update(ROW_SETTINGS)
    for name, value in settings.items():
        try:
            clickhouse_setting_literal(name, value)
        except ValueError as exc:
            raise ConfigurationError(f"clickhouse_settings: {exc}") from None
    return settings


def settings_clause(settings: dict[str, Any]) -> str:
    """``SETTINGS a = 1, b = 'x'`` (names and values validated and quoted)."""
    if not settings:
        return ""
    return "SETTINGS " + ", ".join(clickhouse_setting_literal(k, v) for k, v in settings.items())


SECRET_PARAMS = ("dest_key_id", "dest_secret", "dest_token")


class ExportError(TransientError):
    """The export statement finished but its files are not all there (retried: a new attempt, new files)."""


class RowCountMismatchError(ExportError):
    """The files hold a different number of rows than were counted just before: rows arrived or went while
    exporting, or something cut the result. Nothing is registered; a retry writes and counts anew."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote; handed to the register task as XCom."""

    partition: str
    table: str
    files: list[str]
    object_keys: list[str]
    rows: int
    bytes: int
    dry_run: bool = False
    day_rows: dict[str, int] = field(default_factory=dict)
    """A batch of days: each day's rows (``YYYY-MM-DD`` → rows, 0 for a day without data)."""
    invalid_utf8: dict[str, int] = field(default_factory=dict)
    """Values that were not valid UTF-8, per text column (only columns with some): the export wrote them with
    each invalid sequence replaced by U+FFFD (``toValidUTF8``)."""

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


#: Upper bound on the files one partition is split into (each a ClickHouse writer held open at once).
MAX_FILES_PER_PARTITION = 256


def scope_parameters(scope: Scope) -> dict[str, Any]:
    """The bound parameters of the export SELECT for ``scope``."""
    params: dict[str, Any] = {"team_id": scope.team_id}
    if isinstance(scope, Partition):
        params["day"] = scope.day.isoformat()
    return params


@dataclass(frozen=True)
class Counted:
    """What the export of a partition will write: its rows, and per text column the values that are not valid
    UTF-8 (only columns with some), which it writes with U+FFFD in place of each invalid sequence."""

    rows: int
    invalid_utf8: dict[str, int] = field(default_factory=dict)


def invalid_by_column(table: TableSpec, counts: Any) -> dict[str, int]:
    """``{column: values}`` from the aggregates of :func:`invalid_utf8_counts`, columns with none left out."""
    return {column: int(n) for column, n in zip(table.text_columns, counts, strict=True) if int(n or 0)}


def count_partition(
    clickhouse: ClickHouseHook, table: TableSpec, scope: Scope, settings: dict[str, Any] | None = None,
) -> Counted:
    """How many rows the export of ``scope`` will write, and how many of its text values ``toValidUTF8`` will
    change, with the export's own effective settings, so that the count and the file can be compared. It
    reads the filter columns and the text columns (the one statement that can see the bytes as stored)."""
    select = export_select(table, clickhouse.database, daily=isinstance(scope, Partition), valid_utf8=False)
    sql = f"SELECT count(), {invalid_utf8_counts(table)} FROM (\n{select}\n)\n{settings_clause(merged_settings(settings))}"
    with clickhouse.step("count"):
        rows, *invalid = clickhouse.query_rows(sql, scope_parameters(scope))[0]
    return Counted(int(rows), invalid_by_column(table, invalid))


def count_partition_rows(
    clickhouse: ClickHouseHook, table: TableSpec, scope: Scope, settings: dict[str, Any] | None = None,
) -> int:
    """The rows of :func:`count_partition`."""
    return count_partition(clickhouse, table, scope, settings).rows


def log_invalid_utf8(scope_key: str, table: TableSpec, invalid: dict[str, int]) -> None:
    """One line for a partition whose text held bytes that are not UTF-8 (nothing when it held none)."""
    if invalid:
        log.warning("event=invalid_utf8_replaced partition=%s table=%s values=%d columns=%s "
                    "(each invalid sequence written as U+FFFD, so every reader can decode the files)",
                    scope_key, table.name, sum(invalid.values()), ",".join(f"{c}:{n}" for c, n in invalid.items()))


def count_alongside(
    clickhouse: ClickHouseHook, table: TableSpec, scope: Scope, preflight: Callable[[], None] | None,
    settings: dict[str, Any] | None = None, counter: Callable[..., Any] = count_partition_rows,
) -> Any:
    """The partition's row count, taken while ``preflight`` runs in this thread: ClickHouse answers the
    one while the catalog answers the other. A failing ``preflight`` is what is raised (the count is
    waited for, and nothing has been written either way). The connection is read before the count
    starts, so that every Airflow call stays in this thread. When Airflow's execution timeout interrupts this
    thread, the count is not waited for: ``on_kill`` kills it."""
    if preflight is None:
        return counter(clickhouse, table, scope, settings)
    clickhouse.prepare()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckling-count")
    try:
        counting = pool.submit(counter, clickhouse, table, scope, settings)
        try:
            preflight()
        except Exception:  # Airflow's execution timeout is a BaseException: it leaves at once (on_kill kills the count)
            wait([counting])  # a failing preflight is what is raised, once the count is done
            raise
        return counting.result()
    finally:
        pool.shutdown(wait=False)


def planned_files(rows: int, rows_per_file: int) -> int:
    """Files for a partition of ``rows``: one up to ``rows_per_file``, then one per ``rows_per_file``."""
    if rows_per_file < 1:
        raise ConfigurationError(f"rows_per_file must be at least 1, got {rows_per_file}")
    return max(1, min(MAX_FILES_PER_PARTITION, -(-rows // rows_per_file)))


def file_keys(scope: Scope, table: TableSpec, token: str, files: int) -> tuple[str, str]:
    """(key the export writes to, key pattern that reads back exactly this attempt's files).

    One file keeps the plain ``{token}.parquet``; several are ``{token}-part{N}.parquet`` (ClickHouse fills
    ``{_partition_id}`` in with N).
    """
    if files == 1:
        key = scope.object_key(table.name, token)
        return key, key
    prefix = scope.prefix(table.name)
    return f"{prefix}{token}-part{{_partition_id}}.parquet", f"{prefix}{token}-part*.parquet"


def export_statement(
    clickhouse: ClickHouseHook, storage: DucklingStorage, table: TableSpec, scope: Scope, key: str,
    settings: dict[str, Any] | None = None, files: int = 1,
) -> tuple[str, dict[str, Any]]:
    """The ``INSERT INTO FUNCTION`` statement writing ``scope`` to ``key``, and its bound parameters.

    :param files: with more than one, rows are spread over that many files by a hash of the table's
        split column (``key`` must then contain ``{_partition_id}``).
    """
    destination, params = storage.clickhouse_table_function(key)
    params.update(scope_parameters(scope))
    select = export_select(table, clickhouse.database, daily=isinstance(scope, Partition))
    split = ""
    if files > 1:
        split = f"PARTITION BY cityHash64({clickhouse_ident(table.split_column)}) % {int(files)}\n"
    return f"INSERT INTO FUNCTION {destination}\n{split}{select}\n{settings_clause(merged_settings(settings))}", params


def export_partition(
    clickhouse: ClickHouseHook,
    storage: DucklingStorage,
    table: TableSpec,
    scope: Scope,
    token: str,
    settings: dict[str, Any] | None = None,
    *,
    dry_run: bool = False,
    rows_per_file: int | None = None,
    preflight: Callable[[], None] | None = None,
) -> ExportResult:
    """Write ``scope`` of ``table`` to ``storage`` under keys unique to ``token``.

    :param dry_run: log the statement (credentials masked) and where it would write; write nothing.
    :param rows_per_file: split a partition of more rows than this into files of about this many rows
        (one statement, one scan); default ``[duckling] rows_per_file``.
    :param preflight: a check of the destination that must pass before anything is written; it runs
        in this thread while the row count runs in another.
    """
    from airflow_provider_duckling.registry.settings import rows_per_file as default_rows_per_file

    target = rows_per_file or default_rows_per_file()
    counted: Counted = count_alongside(clickhouse, table, scope, preflight, settings, counter=count_partition)
    expected = counted.rows
    log_invalid_utf8(scope.key, table, counted.invalid_utf8)
    files = planned_files(expected, target)
    key, pattern = file_keys(scope, table, token, files)
    sql, params = export_statement(clickhouse, storage, table, scope, key, settings, files)
    if dry_run:
        shown = {k: ("***" if k in SECRET_PARAMS else v) for k, v in params.items()}
        log.info("event=dry_run_export partition=%s table=%s object=%s rows=%d files=%d",
                 scope.key, table.name, storage.uri(key), expected, files)
        log.info("event=dry_run_export would run:\n%s\nwith parameters %s", sql, shown)
        return ExportResult(scope.key, table.name, [storage.uri(key)], [key], expected, 0, dry_run=True,
                            invalid_utf8=counted.invalid_utf8)
    log.info(
        "event=export_started partition=%s table=%s object=%s rows_expected=%d files_planned=%d clickhouse=%s",
        scope.key, table.name, storage.uri(key), expected, files, "chdb" if clickhouse.is_embedded else "http",
    )
    storage.prepare(key)
    with clickhouse.step("export"):
        clickhouse.execute(sql, params)
    with clickhouse.step("read_back"):
        written = written_files(clickhouse, storage, pattern)
    if not written:
        raise ExportError(f"{scope.key}: the export of {table.name} reported success but no file was found")
    keys = [k for k, _, _ in written]
    rows, size = sum(r for _, r, _ in written), sum(b for _, _, b in written)
    if rows != expected:
        raise RowCountMismatchError(
            f"{scope.key}: the export of {table.name} wrote {rows} rows but {expected} were counted just before; "
            "nothing was registered"
        )
    log.info("event=export_finished partition=%s table=%s rows=%d bytes=%d files=%d",
             scope.key, table.name, rows, size, len(keys))
    return ExportResult(scope.key, table.name, [storage.uri(k) for k in keys], keys, rows, size,
                        invalid_utf8=counted.invalid_utf8)


def written_files(clickhouse: ClickHouseHook, storage: DucklingStorage, pattern: str) -> list[tuple[str, int, int]]:
    """(key, rows, bytes) of each file matching ``pattern``, from the Parquet footers (no data scan).

    One file is read by its exact key: an empty day's file holds no row group, so grouping by file would
    not see it.
    """
    destination, params = storage.clickhouse_table_function(pattern)
    rows_as_they_are = settings_clause(ROW_SETTINGS)  # a server profile's limit or offset cannot cut the read-back
    if "*" not in pattern:
        rows, size = clickhouse.query_rows(f"SELECT count(), any(_size) FROM {destination} {rows_as_they_are}", params)[0]
        return [(pattern, int(rows), int(size or 0))]
    directory = pattern.rsplit("/", 1)[0] + "/"
    found = clickhouse.query_rows(
        f"SELECT _file, count(), any(_size) FROM {destination} GROUP BY _file ORDER BY _file {rows_as_they_are}", params,
    )
    return [(directory + name, int(rows), int(size or 0)) for name, rows, size in found]
