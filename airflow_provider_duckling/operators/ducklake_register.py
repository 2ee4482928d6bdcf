"""DuckLakeRegisterOperator: swap a team-day's exported files into the duckling in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_duckling.catalog import get_duckling
from airflow_provider_duckling.errors import RegistrationError
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.lake import register_files
from airflow_provider_duckling.partitions import Partition, parse_day, validate_team_id
from airflow_provider_duckling.tables import get_table


class DuckLakeRegisterOperator(BaseOperator):
    """
    Register the files an export task wrote, replacing that team-day's rows atomically.

    In one DuckLake transaction: delete the day's existing rows, ``ducklake_add_data_files`` each new
    file, check the day now holds exactly the exported row count, commit. A file already registered is
    never registered again (re-running this task alone is a no-op when the day already holds it).

    :param team_id: the team (templated).
    :param day: the UTC day, ``YYYY-MM-DD`` (templated).
    :param table: which table (``events``).
    :param export_task_id: the task whose XCom lists the files and row count.
    :param ducklake_conn_id: connection of type ``ducklake``; defaults to the registry entry's ``catalog_conn_id``.
    :param cleanup_existing_partition_data: delete the day's existing rows in the same transaction.
    :param create_tables_if_missing: create the schema and table when absent (else fail clearly).
    :param registry_path: the duckling registry file; defaults to the configured one.
    """

    template_fields: Sequence[str] = ("team_id", "day")
    ui_color = "#a7f3d0"

    def __init__(
        self,
        *,
        team_id: int | str,
        day: str,
        table: str = "events",
        export_task_id: str = "export",
        ducklake_conn_id: str | None = None,
        cleanup_existing_partition_data: bool = True,
        create_tables_if_missing: bool = True,
        registry_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        get_table(table)
        self.team_id = team_id
        self.day = day
        self.table = table
        self.export_task_id = export_task_id
        self.ducklake_conn_id = ducklake_conn_id
        self.cleanup_existing_partition_data = cleanup_existing_partition_data
        self.create_tables_if_missing = create_tables_if_missing
        self.registry_path = registry_path

    def execute(self, context: Context) -> dict[str, Any]:
        partition = Partition(validate_team_id(self.team_id), parse_day(self.day))
        table = get_table(self.table)
        exported = context["ti"].xcom_pull(task_ids=self.export_task_id)
        if not isinstance(exported, dict) or exported.get("partition") != partition.key or exported.get("table") != table.name:
            raise RegistrationError(
                f"{partition.key}: task {self.export_task_id!r} handed over no export of {table.name} for this partition"
            )
        duckling = get_duckling(partition.team_id, self.registry_path)
        hook = DuckLakeHook(self.ducklake_conn_id)
        storage = hook.storage(duckling)
        with hook.attach(duckling, storage) as con:
            result = register_files(
                con, table, partition, list(exported["files"]), int(exported["rows"]), storage.data_path,
                cleanup_existing=self.cleanup_existing_partition_data,
                create_if_missing=self.create_tables_if_missing,
                commit_message=f"{table.name} {partition.key} run={context['run_id']}",
            )
        return {
            "partition": partition.key,
            "table": table.name,
            "rows": result.rows,
            "files": result.added_files,
            "deleted_rows": result.deleted_rows,
            "snapshot_id": result.snapshot_id,
        }
