"""DuckLakeRegisterOperator: swap a partition's exported files into the duckling in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_duckling.assets.ducklake import (
    asset_event_extra,
    batch_event_extra,
    duckling_asset,
    publish_partition,
)
from airflow_provider_duckling.common.errors import RegistrationError
from airflow_provider_duckling.domain import outcomes
from airflow_provider_duckling.domain.partitions import DayRange, FullExport, Partition
from airflow_provider_duckling.domain.tables import PERSONS
from airflow_provider_duckling.health import metrics
from airflow_provider_duckling.operators.base import DucklingPartitionOperator, Target
from airflow_provider_duckling.operators.lineage import LineageFacts, lake_dataset, object_dataset
from airflow_provider_duckling.transfer.lake import count_rows, qualified, register_files, table_exists

log = logging.getLogger(__name__)


class DuckLakeRegisterOperator(DucklingPartitionOperator):
    """
    Register the files an export task wrote, replacing that partition's rows atomically (a batch of
    days: all of its days in one transaction, each day checked against its exported rows).

    In one DuckLake transaction: (with ``delete_tables``, drop and recreate the table;) delete the
    partition's existing rows, ``ducklake_add_data_files`` each new file, check the partition now holds
    exactly the exported row count, commit. A file already registered is never registered again
    (re-running this task alone is a no-op when the lake already holds it).

    :param export_task_id: the task whose XCom lists the files and row count.
    :param skip_ducklake_registration: leave the lake untouched (templated). The files stay in S3 for good:
        each gets a marker ``export_only/{its key}.json`` (partition, table, run, rows) and maintenance never
        deletes a marked file as an orphan (see :func:`~airflow_provider_duckling.transfer.maintenance.keep_export_only`).
    :param cleanup_existing_partition_data: delete the partition's existing rows in the same
        transaction; off, rows accumulate (templated).
    :param outlets: defaults to :func:`~airflow_provider_duckling.assets.ducklake.duckling_asset` of the team and
        table (when ``team_id`` is not templated). Each registered partition emits one event per Asset
        outlet, with partition key ``{team_id}_{YYYY-MM-DD}`` and extra ``rows``, ``bytes``, ``files``,
        ``snapshot_id``. A dry run or a skipped registration emits none: the task ends *skipped*.
        Either way the task records how the run ended (XCom ``outcome``, one ``event=run_outcome`` log
        line, see :mod:`~airflow_provider_duckling.domain.outcomes`).

    The remaining parameters are those of
    :class:`~airflow_provider_duckling.operators.base.DucklingPartitionOperator`.
    """

    template_fields: Sequence[str] = (
        *DucklingPartitionOperator._base_fields, "skip_ducklake_registration", "cleanup_existing_partition_data",
    )
    ui_color = "#a7f3d0"

    def __init__(
        self,
        *,
        export_task_id: str = "export",
        skip_ducklake_registration: bool | str = False,
        cleanup_existing_partition_data: bool | str = True,
        **kwargs: Any,
    ) -> None:
        team_id = kwargs.get("team_id")
        if "outlets" not in kwargs and isinstance(team_id, int | str) and str(team_id).isdigit():
            kwargs["outlets"] = [duckling_asset(int(team_id), kwargs.get("table", "events"))]
        super().__init__(**kwargs)
        self.export_task_id = export_task_id
        self.skip_ducklake_registration = skip_ducklake_registration
        self.cleanup_existing_partition_data = cleanup_existing_partition_data

    def run(self, context: Context) -> dict[str, Any]:
        cleanup = self.flag("cleanup_existing_partition_data")
        skip = self.flag("skip_ducklake_registration")
        target = self.resolve()
        exported = context["ti"].xcom_pull(task_ids=self.export_task_id)
        target = self._as_exported(target, exported)
        key, table = target.scope.key, target.table.name
        if not isinstance(exported, dict) or exported.get("partition") != key or exported.get("table") != table:
            raise RegistrationError(f"{key}: task {self.export_task_id!r} handed over no export of {table} for this partition")
        self.objects_url = target.objects_url(list(exported.get("object_keys") or []))
        if skip:
            dry_run = self.flag("dry_run") or bool(exported.get("dry_run"))
            if not dry_run:
                from airflow_provider_duckling.transfer.maintenance import keep_export_only

                keep_export_only(target.storage, list(exported["files"]), {
                    "partition": key, "table": table, "run_id": context["run_id"], "rows": exported.get("rows")})
            log.info("event=registration_skipped partition=%s table=%s files=%s kept_as_export_only=%s", key, table,
                     exported["files"], not dry_run)
            self.record_outcome(context, key, table, outcomes.dry_run() if dry_run else outcomes.not_registered())
            raise AirflowSkipException(f"skip_ducklake_registration: {key} left in S3 as an export-only file (kept by "
                                       "maintenance), not registered (no asset event)")
        if self.flag("dry_run") or exported.get("dry_run"):
            self._dry_run(target, exported, cleanup)
            self.record_outcome(context, key, table, outcomes.dry_run())
            raise AirflowSkipException(f"dry run: nothing registered for {key} (no asset event)")
        day_rows = self._day_rows(target, exported)  # a batch's rows per day, checked before the lake is reached
        with target.hook.attach(target.duckling, target.storage) as con:
            result = register_files(
                con, target.table, target.scope, list(exported["files"]), int(exported["rows"]), target.storage.data_path,
                cleanup_existing=cleanup,
                create_if_missing=self.flag("create_tables_if_missing"),
                delete_tables=self.flag("delete_tables"),
                commit_message=f"{table} {key} run={context['run_id']}",
                day_rows=day_rows,
            )
        if cleanup:
            log.info("event=cleanup partition=%s table=%s deleted_rows=%d", key, table, result.deleted_rows)
        files = list(exported["files"])
        extra = asset_event_extra(result.rows, int(exported.get("bytes") or 0), len(files), result.snapshot_id)
        keys: list[str] = [key]
        if isinstance(target.scope, DayRange):
            keys = [p.key for p in target.scope.partitions]
            extra = batch_event_extra(extra, key, len(keys))
        published = publish_partition(context, list(self.outlets or []), keys, extra)
        log.info("event=asset_event partition=%s table=%s assets=%d rows=%d bytes=%d files=%d snapshot_id=%s "
                 "events=%d", key, table, published, result.rows, int(exported.get("bytes") or 0), len(files),
                 extra["snapshot_id"], published * len(keys))
        invalid_utf8 = {str(c): int(n) for c, n in (exported.get("invalid_utf8") or {}).items()}
        self.record_outcome(context, key, table, outcomes.registered(target.duckling.paused))
        metrics.partition_registered(target.scope.team_id, table, result.rows, int(exported.get("bytes") or 0),
                                     sum(invalid_utf8.values()))
        d = target.duckling
        self.lineage_facts = LineageFacts(
            inputs=[object_dataset(uri) for uri in files],
            outputs=[lake_dataset(d.db_host, d.db_port or target.lake_settings.port, d.db_name, table)],
            table=target.table, rows=result.rows, bytes=extra["bytes"], files=len(files),
        )
        return {
            "partition": key,
            "table": table,
            "rows": result.rows,
            "files": result.added_files,
            "deleted_rows": result.deleted_rows,
            "snapshot_id": result.snapshot_id,
            "invalid_utf8": invalid_utf8,
            **({"day_rows": day_rows} if day_rows is not None else {}),
        }

    @staticmethod
    def _day_rows(target: Target, exported: dict[str, Any]) -> dict[str, int] | None:
        """A batch's rows per day as exported (every day of the batch; ``None`` for one day or a full export)."""
        if not isinstance(target.scope, DayRange):
            return None
        given = exported.get("day_rows")
        if not isinstance(given, dict):
            raise RegistrationError(f"{target.scope.key}: the export handed over no rows per day for the batch")
        return {p.day.isoformat(): int(given.get(p.day.isoformat(), 0)) for p in target.scope.partitions}

    @staticmethod
    def _as_exported(target: Target, exported: Any) -> Target:
        """The export of a persons day becomes the team's full export when the duckling has none yet (see
        :meth:`ClickHouseToDucklingS3Operator._persons_scope`): register what it wrote, as the full export."""
        full = FullExport(target.scope.team_id)
        if (target.table.name == PERSONS.name and isinstance(target.scope, Partition | DayRange) and isinstance(exported, dict)
                and exported.get("partition") == full.key and exported.get("table") == PERSONS.name):
            return replace(target, scope=full)
        return target

    def _dry_run(self, target: Target, exported: dict[str, Any], cleanup: bool) -> dict[str, Any]:
        """Log what registration would do, reading the lake read-only (or not at all if it is new)."""
        key, table = target.scope.key, target.table
        existing: int | str = "unknown (lake not initialised)"
        try:
            with target.hook.attach(target.duckling, target.storage, read_only=True) as con:
                existing = count_rows(con, table, target.scope) if table_exists(con, table) else 0
        except Exception as exc:
            self.log.info("event=dry_run_register lake not readable (%s)", type(exc).__name__)
        if self.flag("delete_tables"):
            self.log.warning("event=dry_run_register would DROP and recreate %s", qualified(table))
        if cleanup:
            predicate = target.scope.lake_predicate(table.day_column)
            self.log.info("event=dry_run_register would DELETE FROM %s WHERE %s (currently %s rows)",
                          qualified(table), predicate, existing)
        for uri in exported["files"]:
            self.log.info("event=dry_run_register would CALL ducklake_add_data_files('lake', %r, %r, schema => 'posthog', "
                          "hive_partitioning => false)", table.name, uri)
        return {"partition": key, "table": table.name, "dry_run": True, "existing_rows": existing}
