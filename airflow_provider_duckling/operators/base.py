"""What both duckling operators share: which team, table and partition a task moves, and how the duckling
is reached."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_duckling.access.extensions import prefetch
from airflow_provider_duckling.access.storage import DucklingStorage
from airflow_provider_duckling.common.errors import ConfigurationError, DucklingError, TransientError
from airflow_provider_duckling.common.heap import frozen_heap
from airflow_provider_duckling.common.redaction import scrub
from airflow_provider_duckling.domain.outcomes import XCOM_KEY, Outcome
from airflow_provider_duckling.domain.partitions import Scope
from airflow_provider_duckling.domain.tables import TableSpec, get_table
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook, LakeSettings
from airflow_provider_duckling.links.exported_objects import ExportedObjectsLink, objects_url
from airflow_provider_duckling.registry.catalog import Duckling, get_duckling
from airflow_provider_duckling.registry.options import as_bool, resolve_scope

# The stdlib logger reaches the task log (Airflow routes it there) and Python's own logging alike.
log = logging.getLogger(__name__)


@dataclass
class Target:
    """Everything a task resolved before it touches an engine."""

    scope: Scope
    table: TableSpec
    duckling: Duckling
    hook: DuckLakeHook
    storage: DucklingStorage
    lake_settings: LakeSettings

    def objects_url(self, object_keys: list[str]) -> str | None:
        """Where to browse the directory of the partition's objects (the task's extra link)."""
        if not object_keys:
            return None
        prefix = object_keys[0].rsplit("/", 1)[0] + "/"
        local = str(self.storage.local_dir) if self.storage.local_dir is not None else None
        return objects_url(self.storage.bucket, self.storage.region, prefix, self.lake_settings.console_url, local)


class DucklingPartitionOperator(BaseOperator):
    """Base of the export and register operators (not used directly).

    :param team_id: the team (templated).
    :param day: the UTC day ``YYYY-MM-DD`` to move (templated); ignored when ``partition_key`` or
        ``full_export`` is given.
    :param last_day: move ``day`` through this day (inclusive) as one batch (templated; empty: ``day``
        alone). The generated DAGs pass their run's data interval, a quarter of history or one day.
    :param partition_key: ``{team_id}_{YYYY-MM-DD}``, or a range ``{team_id}_{first}..{last}``, to move
        instead of ``day`` (templated); must belong to ``team_id``.
    :param full_export: move all of the team's rows instead of one day (persons only; templated).
    :param table: ``events`` or ``persons``.
    :param ducklake_conn_id: connection of type ``ducklake``; defaults to the registry entry's ``catalog_conn_id``.
    :param create_tables_if_missing: create the schema and table when absent, else fail clearly (templated).
    :param delete_tables: DANGER — drop and recreate the table before registering (templated).
    :param dry_run: log what would happen and write nothing (templated).
    :param registry_path: the duckling registry file; defaults to the configured one.
    """

    operator_extra_links = (ExportedObjectsLink(),)
    #: Whether the task attaches the lake with DuckDB (the export task reads the catalog's tables instead).
    attaches_lake = True
    _base_fields = ("team_id", "day", "last_day", "partition_key", "full_export", "create_tables_if_missing",
                    "delete_tables", "dry_run")

    def __init__(
        self,
        *,
        team_id: int | str,
        day: str | None = None,
        last_day: str | None = None,
        partition_key: str | None = None,
        full_export: bool | str = False,
        table: str = "events",
        ducklake_conn_id: str | None = None,
        create_tables_if_missing: bool | str = True,
        delete_tables: bool | str = False,
        dry_run: bool | str = False,
        registry_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        get_table(table)
        self.team_id = team_id
        self.day = day
        self.last_day = last_day
        self.partition_key = partition_key
        self.full_export = full_export
        self.table = table
        self.ducklake_conn_id = ducklake_conn_id
        self.create_tables_if_missing = create_tables_if_missing
        self.delete_tables = delete_tables
        self.dry_run = dry_run
        self.registry_path = registry_path
        #: Set while running: the objects' location (extra link) and what lineage reports.
        self.objects_url: str | None = None
        self.lineage_facts: Any = None

    def execute(self, context: Context) -> Any:
        """Run :meth:`run` (with the heap that existed before it frozen, see :mod:`~airflow_provider_duckling.common.heap`);
        a permanent, explained error fails the task without retries (same input, same failure), with its
        one-line message; transient ones are left to Airflow's retries."""
        from airflow.sdk.exceptions import AirflowSkipException, AirflowTaskTimeout

        try:
            with frozen_heap():
                return self.run(context)
        except AirflowSkipException:
            raise
        except AirflowTaskTimeout:  # as is: Airflow then calls on_kill
            log.error("event=task_failed retryable=true reason=AirflowTaskTimeout: the task ran past its execution_timeout")
            raise
        except TransientError as exc:
            log.error("event=task_failed retryable=true reason=%s: %s", type(exc).__name__, scrub(str(exc)))
            raise TransientError(scrub(str(exc))) from None
        except (DucklingError, ValueError, TypeError) as exc:
            from airflow.sdk.exceptions import AirflowFailException

            log.error("event=task_failed retryable=false reason=%s: %s", type(exc).__name__, scrub(str(exc)))
            raise AirflowFailException(f"{type(exc).__name__}: {scrub(str(exc))}") from None
        except Exception as exc:  # anything unexpected: one scrubbed line, then Airflow's retries
            message = f"{type(exc).__name__}: {scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else '')}"
            log.error("event=task_failed retryable=true reason=%s", message)
            raise TransientError(message) from None

    def run(self, context: Context) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def record_outcome(self, context: Context, key: str, table: str, outcome: Outcome) -> None:
        """Say how the run ended, where a person and ``duckling run`` look: one ``event=run_outcome`` line in
        the task log and XCom key ``outcome`` (Airflow's run state is *success* even when nothing moved)."""
        log.info("event=run_outcome partition=%s table=%s outcome=%s moved=%s detail=%s", key, table, outcome.code,
                 str(outcome.moved).lower(), outcome.detail)
        context["ti"].xcom_push(key=XCOM_KEY, value=outcome.to_xcom())

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage inputs/outputs of the finished task (called by the OpenLineage provider, if installed)."""
        from airflow_provider_duckling.operators.lineage import operator_lineage

        if self.lineage_facts is None:
            from airflow.providers.openlineage.extractors import OperatorLineage

            return OperatorLineage()
        return operator_lineage(self.lineage_facts)

    def flag(self, name: str) -> bool:
        """A boolean option after templating (native or string)."""
        return as_bool(name, getattr(self, name))

    def resolve(self) -> Target:
        """Validate the inputs and reach the duckling (assuming its role), in that order: a bad team, day or
        option fails before anything is contacted."""
        scope = resolve_scope(self.team_id, self.day, self.partition_key, self.full_export, self.last_day)
        table = get_table(self.table)
        if self.flag("full_export") and table.name != "persons":
            raise ConfigurationError("full_export applies to persons only; events move by UTC days")
        for name in ("create_tables_if_missing", "delete_tables", "dry_run"):
            self.flag(name)
        if self.attaches_lake:  # every lake needs DuckLake: its file is checked while the registry is read
            prefetch(("ducklake",))
        duckling = get_duckling(scope.team_id, self.registry_path)
        hook = DuckLakeHook(self.ducklake_conn_id)
        lake_settings = hook.settings(duckling)
        storage = hook.storage(duckling, lake_settings, will_attach=self.attaches_lake)
        return Target(scope, table, duckling, hook, storage, lake_settings)
