"""ClickHouseToDucklingS3Operator: ClickHouse writes one team-day as Parquet straight into the duckling.

No row passes through the Airflow worker: the task sends one ``INSERT INTO FUNCTION s3(...) SELECT ...``
and then reads the written file's row count from its Parquet footer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_duckling.catalog import get_duckling
from airflow_provider_duckling.errors import ConfigurationError
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.partitions import Partition, parse_day, run_token, validate_team_id
from airflow_provider_duckling.quoting import clickhouse_setting_literal
from airflow_provider_duckling.tables import daily_export_select, get_table

#: Settings every export runs with; user settings are merged over them.
DEFAULT_CLICKHOUSE_SETTINGS: dict[str, Any] = {
    "s3_truncate_on_insert": 1,  # an attempt's own object may be rewritten by a retry of that attempt
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
    return "SETTINGS " + ", ".join(clickhouse_setting_literal(k, v) for k, v in settings.items()) if settings else ""


class ClickHouseToDucklingS3Operator(BaseOperator):
    """
    Export one team's data for one UTC day from ClickHouse to Parquet in the team's duckling bucket.

    The object key is ``backfill/{table}/team_id={team_id}/year=YYYY/month=MM/day=DD/{run_id}-try{N}.parquet``:
    every attempt writes a new object, so nothing the lake already references is ever overwritten.
    Returns (as XCom) ``{"partition", "table", "files", "object_keys", "rows", "bytes"}`` for the register task.

    :param team_id: the team to export (templated).
    :param day: the UTC day, ``YYYY-MM-DD`` (templated); must have ended and be on or after 1970-01-01.
    :param table: which table to export (``events``).
    :param clickhouse_conn_id: connection of type ``clickhouse``.
    :param ducklake_conn_id: connection of type ``ducklake``; defaults to the registry entry's ``catalog_conn_id``.
    :param clickhouse_settings: ClickHouse settings merged over :data:`DEFAULT_CLICKHOUSE_SETTINGS` (templated).
    :param registry_path: the duckling registry file; defaults to the configured one.
    """

    template_fields: Sequence[str] = ("team_id", "day", "clickhouse_settings")
    template_fields_renderers = {"clickhouse_settings": "json"}
    ui_color = "#fcd34d"

    def __init__(
        self,
        *,
        team_id: int | str,
        day: str,
        table: str = "events",
        clickhouse_conn_id: str = ClickHouseHook.default_conn_name,
        ducklake_conn_id: str | None = None,
        clickhouse_settings: dict[str, Any] | None = None,
        registry_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        get_table(table)
        self.team_id = team_id
        self.day = day
        self.table = table
        self.clickhouse_conn_id = clickhouse_conn_id
        self.ducklake_conn_id = ducklake_conn_id
        self.clickhouse_settings = clickhouse_settings
        self.registry_path = registry_path

    def execute(self, context: Context) -> dict[str, Any]:
        partition = Partition(validate_team_id(self.team_id), parse_day(self.day))
        table = get_table(self.table)
        settings = merged_settings(self.clickhouse_settings)
        duckling = get_duckling(partition.team_id, self.registry_path)
        clickhouse = ClickHouseHook(self.clickhouse_conn_id)
        storage = DuckLakeHook(self.ducklake_conn_id).storage(duckling)

        ti = context["ti"]
        key = partition.object_key(table.name, run_token(context["run_id"], ti.try_number))
        destination, params = storage.clickhouse_table_function(key)
        params.update(team_id=partition.team_id, day=partition.day.isoformat())
        sql = f"INSERT INTO FUNCTION {destination}\n{daily_export_select(table, clickhouse.database)}\n{settings_clause(settings)}"

        self.log.info(
            "event=export_started partition=%s table=%s object=%s clickhouse=%s",
            partition.key, table.name, storage.uri(key), "chdb" if clickhouse.is_embedded else "http",
        )
        clickhouse.execute(sql, params)
        rows, size = clickhouse.query_rows(f"SELECT count(), any(_size) FROM {destination}", params)[0]
        self.log.info("event=export_finished partition=%s table=%s rows=%d bytes=%d", partition.key, table.name, rows, size or 0)
        return {
            "partition": partition.key,
            "table": table.name,
            "files": [storage.uri(key)],
            "object_keys": [key],
            "rows": int(rows),
            "bytes": int(size or 0),
        }
