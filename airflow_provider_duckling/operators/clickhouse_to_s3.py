"""ClickHouseToDucklingS3Operator: ClickHouse writes one team-day as Parquet straight into the duckling."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from airflow.sdk import Context

from airflow_provider_duckling.access.workload import Attempt
from airflow_provider_duckling.common.errors import ConfigurationError, SchemaDriftError
from airflow_provider_duckling.domain import outcomes
from airflow_provider_duckling.domain.partitions import DayRange, FullExport, Partition, run_token
from airflow_provider_duckling.domain.persons import (
    as_of_token,
    baseline_time,
    covered_by_baseline,
    full_export_as_of,
    newest_version_sql,
)
from airflow_provider_duckling.domain.tables import LAKE_SCHEMA, PERSONS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.operators.base import DucklingPartitionOperator, Target
from airflow_provider_duckling.operators.lineage import LineageFacts, clickhouse_dataset, object_dataset
from airflow_provider_duckling.registry.options import parse_clickhouse_settings
from airflow_provider_duckling.registry.settings import settle_delay
from airflow_provider_duckling.transfer.batch import export_days
from airflow_provider_duckling.transfer.export import export_partition, merged_settings
from airflow_provider_duckling.transfer.lake import check_schema, table_columns, table_comment


class ClickHouseToDucklingS3Operator(DucklingPartitionOperator):
    """
    Export one team's data for one UTC day, or a batch of days (a quarter of history), or (persons) all of
    it, from ClickHouse to Parquet in the team's duckling bucket.

    No row passes through the worker: ClickHouse's ``s3()`` table function writes the file. The object key
    is ``backfill/{table}/team_id={team_id}/year=YYYY/month=MM/day=DD/{run_id}-try{N}.parquet`` (a full
    export: ``backfill/persons/team_id={team_id}/full/{run_id}-try{N}.parquet``): every attempt writes a new
    object, so nothing the lake already references is ever overwritten. A batch of days writes each day's
    file under that day's key, many days per statement (:mod:`~airflow_provider_duckling.transfer.batch`).
    Persons history is one full export: a batch of persons days is the full export, or nothing when the
    lake's full export already covers them (the task then ends *skipped*, with XCom ``outcome``
    ``covered_by_full_export``, see :mod:`~airflow_provider_duckling.domain.outcomes`). Before exporting, the lake table is checked against the
    export's columns: a type it cannot accept fails here, with nothing written.
    Returns (as XCom) ``{"partition", "table", "files", "object_keys", "rows", "bytes", "dry_run",
    "day_rows"}`` (``day_rows``: each day's rows of a batch).

    :param clickhouse_conn_id: connection of type ``clickhouse``.
    :param clickhouse_settings: ClickHouse settings merged over the defaults in
        :data:`airflow_provider_duckling.transfer.export.DEFAULT_CLICKHOUSE_SETTINGS` (templated).
    :param skip_schema_validation: skip the pre-flight schema check (templated).
    :param rows_per_file: target rows of one file; a larger partition is written as several files of about
        this many rows by one statement (templated; default ``[duckling] rows_per_file``, 5,000,000).

    Every ClickHouse statement of an attempt carries a ``query_id`` unique to it and a ``log_comment`` naming
    team, table, day and run (:mod:`~airflow_provider_duckling.access.workload`); :meth:`on_kill` (the task killed,
    timed out or marked failed) kills the statement ClickHouse is running and sends no other. A statement
    that runs out of time (``TIMEOUT_EXCEEDED``, or the connection's ``send_receive_timeout`` while it still
    ran) fails the task without retries, with what to raise.

    The remaining parameters are those of
    :class:`~airflow_provider_duckling.operators.base.DucklingPartitionOperator`.
    """

    template_fields: Sequence[str] = (
        *DucklingPartitionOperator._base_fields, "clickhouse_settings", "skip_schema_validation", "rows_per_file",
    )
    template_fields_renderers = {"clickhouse_settings": "json"}
    ui_color = "#fcd34d"
    attaches_lake = False

    def __init__(
        self,
        *,
        clickhouse_conn_id: str = ClickHouseHook.default_conn_name,
        clickhouse_settings: dict[str, Any] | str | None = None,
        skip_schema_validation: bool | str = False,
        rows_per_file: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clickhouse_conn_id = clickhouse_conn_id
        self.clickhouse_settings = clickhouse_settings
        self.skip_schema_validation = skip_schema_validation
        self.rows_per_file = rows_per_file

    def run(self, context: Context) -> dict[str, Any]:
        settings = merged_settings(parse_clickhouse_settings(self.clickhouse_settings))
        rows_per_file = self._rows_per_file()
        skip_validation = self.flag("skip_schema_validation")
        target = self.resolve()
        dry_run = self.flag("dry_run")
        token = run_token(context["run_id"], context["ti"].try_number)
        known: dict[str, str] | None = None
        if target.table.name == PERSONS.name and isinstance(target.scope, Partition | DayRange):
            target, known = self._persons_scope(target, dry_run, context)
        attempt = Attempt(
            team_id=target.scope.team_id, table=target.table.name, partition=target.scope.key,
            dag_id=str(getattr(context["ti"], "dag_id", None) or self.dag_id), run_id=str(context["run_id"]), try_number=int(context["ti"].try_number or 0),
        )
        clickhouse = self._clickhouse = ClickHouseHook(self.clickhouse_conn_id, attempt=attempt)
        if isinstance(target.scope, FullExport):
            with clickhouse.step("persons_as_of"):
                newest = clickhouse.query_rows(newest_version_sql(clickhouse.database), {"team_id": target.scope.team_id})
            token = as_of_token(token, full_export_as_of(newest[0][0] if newest else None, dt.datetime.now(dt.UTC)))
        export = export_days if isinstance(target.scope, DayRange) else export_partition
        result = export(
            clickhouse, target.storage, target.table, target.scope, token, settings, dry_run=dry_run,  # type: ignore[arg-type]
            rows_per_file=rows_per_file, preflight=lambda: self._preflight(target, skip_validation, dry_run, known),
        )
        self.objects_url = target.objects_url(result.object_keys)
        if not dry_run:
            host, port = clickhouse.address
            self.lineage_facts = LineageFacts(
                inputs=[clickhouse_dataset(host, port, clickhouse.database, t) for t in target.table.source_tables],
                outputs=[object_dataset(uri) for uri in result.files],
                table=target.table, rows=result.rows, bytes=result.bytes, files=len(result.files),
            )
        return result.to_xcom()

    def on_kill(self) -> None:
        """The task was killed, timed out or marked failed: kill the ClickHouse statement of this attempt that
        may still run (``KILL QUERY WHERE query_id = … SYNC``, bounded) and send no other. Never raises."""
        hook: ClickHouseHook | None = getattr(self, "_clickhouse", None)
        if hook is None:
            return
        try:
            killed = hook.cancel()
            self.log.warning("event=export_cancelled query_id=%s", killed or "-")
        except Exception as exc:  # noqa: BLE001 - on_kill must not raise
            self.log.warning("event=export_cancel_failed reason=%s", type(exc).__name__)

    def _persons_scope(self, target: Target, dry_run: bool, context: Context) -> tuple[Target, dict[str, str] | None]:
        """A persons day needs the team's full export first: without one recorded in the persons table's
        comment (a new duckling, a reset table) the day becomes the full export; a day the full export already
        covers is skipped. A batch of persons days (the history before the daily runs) is the full export
        unless the recorded one covers its last day. Returns the target to move and the lake's columns read on
        the way (``None``: the pre-flight reads them)."""
        from airflow.sdk.exceptions import AirflowSkipException

        team = target.scope.team_id
        if self.flag("delete_tables"):
            self.log.info("event=persons_full_export partition=%s reason=delete_tables: the reset table needs "
                          "the team's full export", target.scope.key)
            return replace(target, scope=FullExport(team)), None
        try:
            columns, comment = self._lake_facts(target, dry_run)
        except Exception as exc:
            if not dry_run or isinstance(exc, ConfigurationError):
                raise
            self.log.info("event=dry_run_preflight lake not readable yet (%s): it would get the full export",
                          type(exc).__name__)
            return replace(target, scope=FullExport(team)), None
        baseline = baseline_time(comment)
        if baseline is None:
            self.log.info("event=persons_full_export partition=%s reason=no_baseline: the duckling has no full export "
                          "of persons yet; this run writes it (then the daily top-ups follow)", target.scope.key)
            return replace(target, scope=FullExport(team)), columns
        last = target.scope.last if isinstance(target.scope, DayRange) else target.scope.day
        if covered_by_baseline(last, baseline, settle_delay()):
            self.record_outcome(context, target.scope.key, target.table.name, outcomes.covered(baseline))
            raise AirflowSkipException(
                f"{target.scope.key}: covered by the full export of persons read at {baseline:%Y-%m-%d %H:%M:%S} UTC; "
                "nothing to do"
            )
        if isinstance(target.scope, DayRange):
            self.log.info("event=persons_full_export partition=%s reason=history: persons history is one full export "
                          "(the recorded one, read at %s, does not cover %s)", target.scope.key, baseline, last)
            return replace(target, scope=FullExport(team)), columns
        return target, columns

    def _rows_per_file(self) -> int | None:
        """The ``rows_per_file`` option, validated before anything is contacted."""
        value = self.rows_per_file
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not str(value).strip().isdigit() or int(value) < 1:
            raise ConfigurationError(f"rows_per_file must be a whole number of rows (at least 1), got {value!r}")
        return int(value)

    @staticmethod
    def _lake_facts(target: Target, dry_run: bool) -> tuple[dict[str, str], str | None]:
        """The lake table's columns and (persons) its comment, which records the full export, from the
        catalog's metadata tables (owner checked, nothing written); a catalog those cannot describe exactly is
        attached instead (read-only in a dry run)."""
        facts = target.hook.read_catalog(target.duckling, target.storage, LAKE_SCHEMA, target.table.name)
        if facts is not None:
            return facts.columns, facts.comment
        with target.hook.attach(target.duckling, target.storage, read_only=dry_run) as con:
            return table_columns(con, target.table), table_comment(con, target.table)

    @classmethod
    def _lake_columns(cls, target: Target, dry_run: bool) -> dict[str, str]:
        """The lake table's columns (empty: no such table)."""
        return cls._lake_facts(target, dry_run)[0]

    def _check_catalog(self, target: Target, dry_run: bool) -> None:
        """Without the schema check, the catalog is still read before anything is written: one of another
        DuckLake format (a customer's newer DuckDB upgraded it) or of another team is refused here, not after
        the export wrote its files."""
        try:
            target.hook.read_catalog(target.duckling, target.storage, LAKE_SCHEMA, target.table.name)
        except Exception as exc:
            if dry_run and not isinstance(exc, ConfigurationError):
                self.log.info("event=dry_run_preflight lake not readable yet (%s)", type(exc).__name__)
                return
            raise

    def _preflight(self, target: Target, skip_validation: bool, dry_run: bool, known: dict[str, str] | None = None) -> None:
        """Check the lake before writing: a missing table with creation off, or a type it cannot accept.

        :param known: the lake's columns when they were read already (the persons baseline check).
        """
        create = self.flag("create_tables_if_missing")
        if self.flag("delete_tables"):
            self.log.warning("event=schema_check_skipped reason=delete_tables: %s.%s will be dropped and recreated",
                             LAKE_SCHEMA, target.table.name)
            self._check_catalog(target, dry_run)
            return
        if skip_validation and create:
            self.log.info("event=schema_check_skipped reason=skip_schema_validation")
            self._check_catalog(target, dry_run)
            return
        try:
            lake = known if known is not None else self._lake_columns(target, dry_run)  # empty: no such table
        except Exception as exc:
            if dry_run and not isinstance(exc, ConfigurationError):
                self.log.info("event=dry_run_preflight lake not readable yet (%s): it would be initialised", type(exc).__name__)
                return
            raise
        if not lake:
            if not create:
                raise SchemaDriftError(
                    f"table {LAKE_SCHEMA}.{target.table.name} does not exist in the duckling of team "
                    f"{target.scope.team_id} and create_tables_if_missing is off; nothing was exported"
                )
            return
        check = check_schema(target.table.lake_columns, lake)
        for problem in check.warnings:
            self.log.warning("event=schema_drift table=%s.%s %s", LAKE_SCHEMA, target.table.name, problem)
        if check.incompatible and not skip_validation:
            raise SchemaDriftError(
                f"the duckling's {LAKE_SCHEMA}.{target.table.name} cannot accept the export: "
                + "; ".join(check.incompatible)
                + ". Nothing was exported. Fix the table (or reset it with delete_tables), or set skip_schema_validation."
            )
        for problem in check.incompatible:
            self.log.warning("event=schema_drift table=%s.%s %s (validation skipped)", LAKE_SCHEMA, target.table.name, problem)
