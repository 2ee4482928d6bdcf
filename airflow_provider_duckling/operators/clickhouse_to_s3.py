"""ClickHouseToDucklingS3Operator: ClickHouse writes one team-day as Parquet straight into the duckling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_duckling.catalog import get_duckling
from airflow_provider_duckling.export import export_partition, merged_settings
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.partitions import Partition, parse_day, run_token, validate_team_id
from airflow_provider_duckling.tables import get_table


class ClickHouseToDucklingS3Operator(BaseOperator):
    """
    Export one team's data for one UTC day from ClickHouse to Parquet in the team's duckling bucket.

    No row passes through the worker: ClickHouse's ``s3()`` table function writes the file. The object key
    is ``backfill/{table}/team_id={team_id}/year=YYYY/month=MM/day=DD/{run_id}-try{N}.parquet``: every
    attempt writes a new object, so nothing the lake already references is ever overwritten. Returns (as
    XCom) ``{"partition", "table", "files", "object_keys", "rows", "bytes"}`` for the register task.

    :param team_id: the team to export (templated).
    :param day: the UTC day, ``YYYY-MM-DD`` (templated); must have ended and be on or after 1970-01-01.
    :param table: which table to export (``events``).
    :param clickhouse_conn_id: connection of type ``clickhouse``.
    :param ducklake_conn_id: connection of type ``ducklake``; defaults to the registry entry's ``catalog_conn_id``.
    :param clickhouse_settings: ClickHouse settings merged over the defaults in
        :data:`airflow_provider_duckling.export.DEFAULT_CLICKHOUSE_SETTINGS` (templated).
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
        storage = DuckLakeHook(self.ducklake_conn_id).storage(duckling)
        token = run_token(context["run_id"], context["ti"].try_number)
        result = export_partition(ClickHouseHook(self.clickhouse_conn_id), storage, table, partition, token, settings)
        return result.to_xcom()
