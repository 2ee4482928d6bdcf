"""Exporting one partition: ClickHouse writes Parquet straight to the duckling's storage.

No row passes through this process: it sends one ``INSERT INTO FUNCTION s3(...) SELECT ...`` and reads
the written file's row count and size back from ClickHouse (Parquet footer, no data scan).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_duckling.errors import ConfigurationError
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.partitions import Partition, Scope
from airflow_provider_duckling.quoting import clickhouse_setting_literal
from airflow_provider_duckling.storage import DucklingStorage
from airflow_provider_duckling.tables import TableSpec, export_select

log = logging.getLogger(__name__)

#: Settings every export runs with; user settings are merged over them.
DEFAULT_CLICKHOUSE_SETTINGS: dict[str, Any] = {
    "s3_truncate_on_insert": 1,  # a retry of the same attempt may rewrite its own, never-registered object
    "engine_file_truncate_on_insert": 1,  # the same for file() in embedded mode
    "output_format_parquet_string_as_string": 1,  # strings as UTF8 so DuckDB reads VARCHAR, not BLOB
    "output_format_parquet_compression_method": "zstd",
    "output_format_parquet_row_group_size": 1_000_000,
    "max_execution_time": 3600,
}


def merged_settings(user: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with the user's settings; each name and value validated."""
    if user is not None and not isinstance(user, dict):
        raise ConfigurationError(f"clickhouse_settings must be a mapping of setting → value, got {type(user).__name__}")
    settings = {**DEFAULT_CLICKHOUSE_SETTINGS, **(user or {})}
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


_SECRET_PARAMS = ("dest_key_id", "dest_secret", "dest_token")


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

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


def export_statement(
    clickhouse: ClickHouseHook, storage: DucklingStorage, table: TableSpec, scope: Scope, key: str,
    settings: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The ``INSERT INTO FUNCTION`` statement writing ``scope`` to ``key``, and its bound parameters."""
    destination, params = storage.clickhouse_table_function(key)
    params["team_id"] = scope.team_id
    if isinstance(scope, Partition):
        params["day"] = scope.day.isoformat()
    select = export_select(table, clickhouse.database, daily=isinstance(scope, Partition))
    return f"INSERT INTO FUNCTION {destination}\n{select}\n{settings_clause(merged_settings(settings))}", params


def export_partition(
    clickhouse: ClickHouseHook,
    storage: DucklingStorage,
    table: TableSpec,
    scope: Scope,
    token: str,
    settings: dict[str, Any] | None = None,
    *,
    dry_run: bool = False,
) -> ExportResult:
    """Write ``scope`` of ``table`` to ``storage`` under a key unique to ``token``.

    :param dry_run: log the statement (credentials masked) and where it would write; write nothing.
    """
    key = scope.object_key(table.name, token)
    sql, params = export_statement(clickhouse, storage, table, scope, key, settings)
    if dry_run:
        shown = {k: ("***" if k in _SECRET_PARAMS else v) for k, v in params.items()}
        log.info("event=dry_run_export partition=%s table=%s object=%s", scope.key, table.name, storage.uri(key))
        log.info("event=dry_run_export would run:\n%s\nwith parameters %s", sql, shown)
        return ExportResult(scope.key, table.name, [storage.uri(key)], [key], 0, 0, dry_run=True)
    log.info(
        "event=export_started partition=%s table=%s object=%s clickhouse=%s",
        scope.key, table.name, storage.uri(key), "chdb" if clickhouse.is_embedded else "http",
    )
    storage.prepare(key)
    clickhouse.execute(sql, params)
    destination, read_params = storage.clickhouse_table_function(key)
    rows, size = clickhouse.query_rows(f"SELECT count(), any(_size) FROM {destination}", read_params)[0]
    log.info("event=export_finished partition=%s table=%s rows=%d bytes=%d", scope.key, table.name, rows, size or 0)
    return ExportResult(scope.key, table.name, [storage.uri(key)], [key], int(rows), int(size or 0))
