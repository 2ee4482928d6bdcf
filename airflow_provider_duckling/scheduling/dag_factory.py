"""Per-team DAGs generated from the duckling registry, plus the two housekeeping DAGs.

* ``duckling_{table}_backfill_team_{team_id}`` for ``events`` and ``persons``: wait for late events →
  export → register. The schedule is a data-interval timetable
  (:class:`~airflow_provider_duckling.timetables.history.HistoryBatchTimetable`): with ``catchup=True`` from
  the team's start date, Airflow's catch-up is the historical backfill, in batches — a calendar quarter of
  events per run, persons' whole history in one run — up to the team's daily-from day
  (:mod:`~airflow_provider_duckling.domain.history`); from there on each run is one UTC day, starts once the
  day has ended, waits ``[duckling] settle_minutes`` for late events, and tops up the day that just ended.
  Params (the trigger form) carry the original system's options and an optional ``partition_key`` (a day,
  or a range of days).
* ``duckling_discover_start_dates``: finds where each new team's history starts (a task, not the parser),
  re-checks it every ``[duckling] rediscovery_days`` and runs the older days an earlier start uncovers.
* ``duckling_topup_recent_days``: runs each team's last closed days ahead of its catch-up, so a team
  registered with years of history has yesterday in its lake within the hour, not after the history.
* ``duckling_registry_health``: fails, with the reason, while the registry or start dates cannot be read
  (the team DAGs then keep their last good definition instead of disappearing).

Parsing reads two small local files and nothing else: no ClickHouse, S3 or PostgreSQL at parse time.
When Airflow runs a task it tells the parser which DAG it needs, and only that DAG is built.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, Param, get_parsing_context, task

from airflow_provider_duckling.domain.partitions import dag_id_for, run_id_part
from airflow_provider_duckling.operators.clickhouse_to_s3 import ClickHouseToDucklingS3Operator
from airflow_provider_duckling.operators.ducklake_register import DuckLakeRegisterOperator
from airflow_provider_duckling.registry import settings
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.registry.options import OPTION_DOCS
from airflow_provider_duckling.registry.state import DagInputs, load_dag_inputs

log = logging.getLogger(__name__)

TABLES = ("events", "persons")
DISCOVERY_DAG_ID = "duckling_discover_start_dates"
HEALTH_DAG_ID = "duckling_registry_health"
# The run's day. A run triggered without a logical date (Airflow 3's default for UI/CLI triggers) has no
# data interval: it then means the last day that ended before it was triggered.
DAY_TEMPLATE = (
    "{{ data_interval_start.strftime('%Y-%m-%d') if data_interval_start is defined and data_interval_start "
    "else (dag_run.run_after - macros.timedelta(days=1)).strftime('%Y-%m-%d') }}"
)
#: The last day of the run's data interval ('' without one: the run is the one day of DAY_TEMPLATE).
LAST_DAY_TEMPLATE = (
    "{{ (data_interval_end - macros.timedelta(days=1)).strftime('%Y-%m-%d') if data_interval_end is defined "
    "and data_interval_end and data_interval_start else '' }}"
)
RETRY_DAG_ID = "duckling_retry_failed_partitions"
TOPUP_DAG_ID = "duckling_topup_recent_days"
MAINTENANCE_DAG_ID = "duckling_maintenance"


@dataclass(frozen=True)
class DagSettings:
    """The ``[duckling]`` settings a team DAG is built from, read once per parse (not once per DAG)."""

    settle: dt.timedelta
    start_floor: dt.date
    default_args: dict[str, Any]
    export_pool: str
    topup_days: int = 3
    today: dt.date | None = None
    history_months: int = 3

    @classmethod
    def read(cls) -> DagSettings:
        return cls(settings.settle_delay(), settings.start_date_floor(), default_args(), settings.export_pool(),
                   settings.topup_days(), dt.datetime.now(dt.UTC).date(), settings.history_batch_months())


def daily_from_for(table: str, first_seen: dt.datetime | None, topup_days: int, today: dt.date) -> dt.date:
    """The first day a team's ``table`` moves one day per run (days before it are history batches).

    Events: ``topup_days`` before the day the duckling was first seen (those days are the top-up's, run
    ahead of history). Persons: that day itself — the full export of the first run covers every day before
    it, so no run is made for them. Before discovery has seen the duckling, counted from ``today`` (the next
    discovery pass, within 15 minutes, fixes it).
    """
    from airflow_provider_duckling.domain.history import daily_from

    seen = first_seen.astimezone(dt.UTC).date() if first_seen else today
    return seen if table == "persons" else daily_from(seen, topup_days)


def default_args() -> dict[str, Any]:
    """Task retries with exponential backoff (``[duckling] task_retries`` / ``retry_delay_seconds``).

    Plain values only: Airflow serializes ``default_args`` as they are, so an object here (such as the
    priority strategy, which each task gets instead) would be written with its memory address and make
    every parse a new DAG version. The failure notifier (``[duckling] failure_notifier``, see
    :mod:`~airflow_provider_duckling.notifications.failure_notifier`) is the exception: Airflow stores a callback as
    ``has_on_failure_callback: true`` only."""
    from airflow_provider_duckling.notifications.failure_notifier import callback_args

    return {
        "owner": "duckling",
        "retries": settings.task_retries(),
        "retry_delay": settings.retry_delay(),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(hours=1),
        **callback_args(),
    }


def backfill_params(table: str) -> dict[str, Param]:
    """The trigger form: the seven options with the seed's meaning, and which partition to run."""
    params = {
        "partition_key": Param(
            None, type=["null", "string"], pattern=r"^[0-9]+_[0-9]{4}-[0-9]{2}-[0-9]{2}(\.\.[0-9]{4}-[0-9]{2}-[0-9]{2})?$",
            title="Partition",
            description="Run this partition, {team_id}_{YYYY-MM-DD} (e.g. 12345_2024-01-15), or these days as one "
                        "batch, {team_id}_{first}..{last} (e.g. 12345_2024-01-01..2024-01-31), instead of the run's "
                        "own days. Leave empty for the days of the run.",
        ),
    }
    for name, (default, description) in OPTION_DOCS.items():
        kind = "object" if isinstance(default, dict) else "boolean"
        title = name.replace("_", " ").capitalize().replace("Clickhouse", "ClickHouse").replace("ducklake", "DuckLake")
        params[name] = Param(default, type=kind, description=description, title=title)
    if table == "persons":
        params["full_export"] = Param(
            False, type="boolean", title="Full export",
            description="Export all of the team's current persons to backfill/persons/team_id=N/full/ and replace the "
                        "team's persons in the lake in one transaction. A run does this by itself when the lake has "
                        "no full export yet (a new duckling) or with delete_tables (a reset).",
        )
    return params


def _option(name: str) -> str:
    return "{{ params." + name + " }}"


def build_team_dag(
    duckling: Duckling, table: str, start: dt.date | None, *, max_active_runs: int = 4,
    dag_settings: DagSettings | None = None, first_seen: dt.datetime | None = None,
) -> DAG:
    """The DAG that back-fills and tops up ``table`` for one duckling.

    :param start: first day to back-fill; ``None`` while discovery has not run: the DAG then exists (and
        can be triggered by hand) but schedules nothing until its start date is known.
    :param max_active_runs: events runs at once (persons runs one at a time, see below).
    :param dag_settings: the settings, when the caller read them once for many DAGs.
    :param first_seen: when discovery first saw the duckling: history before ``topup_days`` before that
        day moves in batches (:func:`daily_from_for`).
    """
    from airflow_provider_duckling.domain.history import MONTH, WHOLE
    from airflow_provider_duckling.scheduling.priority import RecentDaysFirst
    from airflow_provider_duckling.scheduling.settle import LateEventsSensor
    from airflow_provider_duckling.timetables.history import HistoryBatchTimetable

    config = dag_settings or DagSettings.read()
    settle = config.settle
    # Top-ups ranked ahead of history; on each task (serialized as its class path), not in default_args.
    weight_rule = RecentDaysFirst()
    # A team paused in the registry keeps its DAG (listed, triggerable by hand, same day for a manual run) but
    # its timetable schedules nothing; when the pause ends, catch-up resumes from its last scheduled run.
    today = config.today or dt.datetime.now(dt.UTC).date()
    schedule = HistoryBatchTimetable(
        "0 0 * * *", timezone="UTC", paused=duckling.paused,
        daily_from=daily_from_for(table, first_seen, config.topup_days, today),
        batch=WHOLE if table == "persons" else MONTH, months=config.history_months,
    ) if start else None
    waiting = (" (paused in the registry: schedules nothing)" if duckling.paused
               else "" if start else " (waiting for start-date discovery)")
    with DAG(
        dag_id=dag_id_for(table, duckling.team_id),
        description=f"Back-fill and daily top-up of {table} into team {duckling.team_id}'s duckling{waiting}",
        schedule=schedule,
        start_date=dt.datetime.combine(start or config.start_floor, dt.time(), tzinfo=dt.UTC),
        catchup=True,
        # Persons runs one at a time: a full export (which replaces the team's persons) never lands after a
        # top-up of a day it did not read; its history is one export, so there is little to parallelise.
        max_active_runs=1 if table == "persons" else max_active_runs,
        default_args=dict(config.default_args),
        is_paused_upon_creation=False,
        render_template_as_native_obj=True,
        params=backfill_params(table),
        tags=["duckling", table, f"team:{duckling.team_id}", *(["paused"] if duckling.paused else [])],
        doc_md=__doc__,
    ) as dag:
        wait = LateEventsSensor(
            task_id="wait_for_late_events", delta=settle, partition_key=_option("partition_key"), mode="reschedule",
            poke_interval=300, timeout=settle.total_seconds() + 6 * 3600, weight_rule=weight_rule,
            doc_md="Waits until the run's day has closed plus the settle delay: only a day that has just ended "
                   "waits; older days (catch-up, repairs, the later pass) pass at once.",
        )
        common: dict[str, Any] = {
            "team_id": duckling.team_id,
            "table": table,
            "day": DAY_TEMPLATE,
            "last_day": LAST_DAY_TEMPLATE,
            "partition_key": _option("partition_key"),
            "create_tables_if_missing": _option("create_tables_if_missing"),
            "delete_tables": _option("delete_tables"),
            "dry_run": _option("dry_run"),
            "weight_rule": weight_rule,
        }
        if table == "persons":
            common["full_export"] = _option("full_export")
        export = ClickHouseToDucklingS3Operator(
            task_id="export",
            pool=config.export_pool,
            execution_timeout=dt.timedelta(hours=3),
            clickhouse_settings=_option("clickhouse_settings"),
            skip_schema_validation=_option("skip_schema_validation"),
            **common,
        )
        register = DuckLakeRegisterOperator(
            task_id="register",
            # One commit at a time per team and table (commits to one lake are also retried on conflict).
            max_active_tis_per_dag=1,
            execution_timeout=dt.timedelta(hours=1),
            export_task_id="export",
            skip_ducklake_registration=_option("skip_ducklake_registration"),
            cleanup_existing_partition_data=_option("cleanup_existing_partition_data"),
            **common,
        )
        wait >> export >> register
    return dag


def housekeeping_dag(
    dag_id: str, cron: str, description: str, retries: int = 2, params: dict[str, Param] | None = None,
    tags: tuple[str, ...] = ("duckling", "housekeeping"), doc_md: str | None = None,
) -> DAG:
    """A provider-wide DAG on a cron, latest run only, one at a time, on from the start; its failures reach
    the configured notifier like the team DAGs'."""
    from airflow_provider_duckling.notifications.failure_notifier import callback_args

    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=CronTriggerTimetable(cron, timezone="UTC"),
        start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        default_args={"owner": "duckling", "retries": retries, "retry_delay": dt.timedelta(minutes=1), **callback_args()},
        tags=list(tags),
        params=params,
        doc_md=doc_md,
    )


def build_discovery_dag() -> DAG:
    """Every 15 minutes: discover the start dates of teams that have none yet, re-check known ones every
    ``[duckling] rediscovery_days``, remember them, and run the days an earlier start uncovered."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    with housekeeping_dag(
        DISCOVERY_DAG_ID, "*/15 * * * *",
        "Finds where each new duckling's events history starts in ClickHouse (re-checked every rediscovery_days), "
        "its persons start day, and back-fills days older than a known start",
    ) as dag:

        @task(task_id="discover")
        def discover() -> dict[str, dict[str, str]]:
            from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
            from airflow_provider_duckling.registry.state import load_dag_inputs
            from airflow_provider_duckling.scheduling.discovery import run_discovery

            current = load_dag_inputs()
            if current.problems:
                raise RuntimeError("; ".join(current.problems))
            state = run_discovery(current.ducklings, ClickHouseHook, now=dt.datetime.now(dt.UTC),
                                  floor=settings.start_date_floor(), rediscovery_days=settings.rediscovery_days())
            return {table: {str(t): d.isoformat() for t, d in days.items()} for table, days in state.start_dates.items()}

        @task(task_id="find_rediscovered_days")
        def find_rediscovered_days() -> list[dict[str, Any]]:
            from airflow_provider_duckling.scheduling.discovery import backfill_triggers

            return backfill_triggers(load_dag_inputs().ducklings)

        found = find_rediscovered_days()
        discover() >> found
        TriggerDagRunOperator.partial(task_id="backfill", skip_when_already_exists=True).expand_kwargs(found)
    return dag


def failed_partitions(ducklings: dict[int, Duckling], days: list[dt.date]) -> list[dict[str, Any]]:
    """Scheduled runs of the last ``days`` that failed, as TriggerDagRunOperator arguments for a new run of
    the same partition (one automatic later pass per partition: its run id is fixed). A failed run dated
    at the start of a history batch is run again as that batch (a range key), so none of its days is left
    out."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    retries = []
    by_date = {dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC): day for day in days}

    def failed(states: dict[str, dict[str, Any]]) -> bool:
        return any(state in ("failed", "upstream_failed") for tasks in states.values() for state in tasks.values())

    def failed_last_day(states: dict[str, dict[str, Any]], day: dt.date) -> dt.date:
        """The last day of the failed run (a history batch ends the day before its run-after date)."""
        ends = [interval_end_of(run_id) for run_id, tasks in states.items()
                if any(state in ("failed", "upstream_failed") for state in tasks.values())]
        return max([day, *(end - dt.timedelta(days=1) for end in ends if end is not None)])

    for duckling in ducklings.values():
        if duckling.paused:  # paused in the registry: nothing is re-run automatically
            continue
        for table in TABLES:
            dag_id = dag_id_for(table, duckling.team_id)
            # Scheduled, backfill and top-up runs have midnight logical dates; other manual runs (including
            # earlier later passes) do not, so they are never picked up here.
            if not failed(RuntimeTaskInstance.get_task_states(dag_id=dag_id, logical_dates=list(by_date))):
                continue
            for logical_date, day in by_date.items():
                states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, logical_dates=[logical_date])
                if failed(states):
                    last = failed_last_day(states, day)
                    key = f"{duckling.team_id}_{day.isoformat()}" + (f"..{last.isoformat()}" if last > day else "")
                    log.info("event=later_pass dag=%s partition=%s", dag_id, key)
                    retries.append({"trigger_dag_id": dag_id, "trigger_run_id": f"later_pass__{run_id_part(key)}",
                                    "conf": {"partition_key": key}})
    return retries


_RUN_AFTER = re.compile(r"^(?:scheduled|backfill)__([0-9]{4}-[0-9]{2}-[0-9]{2})T00:00:00(?:\+00:00)?$", re.ASCII)


def interval_end_of(run_id: str) -> dt.date | None:
    """The end of a scheduled or backfill run's data interval, which Airflow names it by (its run-after
    time, ``scheduled__2024-02-01T00:00:00+00:00``); ``None`` for other runs."""
    match = _RUN_AFTER.match(run_id)
    try:
        return dt.date.fromisoformat(match.group(1)) if match else None
    except ValueError:
        return None


def build_retry_dag() -> DAG:
    """Hourly: the later pass — one new run for each partition whose scheduled run failed after its retries."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    with housekeeping_dag(
        RETRY_DAG_ID, "30 * * * *",
        "Re-runs partitions whose scheduled run failed after its task retries (once each)",
    ) as dag:

        @task(task_id="find_failed_partitions")
        def find() -> list[dict[str, Any]]:
            today = dt.datetime.now(dt.UTC).date()
            days = [today - dt.timedelta(days=n) for n in range(1, settings.retry_lookback_days() + 1)]
            return failed_partitions(load_dag_inputs().ducklings, days)

        TriggerDagRunOperator.partial(task_id="rerun", skip_when_already_exists=True).expand_kwargs(find())
    return dag


def closed_recent_days(now: dt.datetime, topup_days: int, settle: dt.timedelta) -> list[dt.date]:
    """The last ``topup_days`` UTC days that have ended and settled by ``now``, newest first."""
    today = now.astimezone(dt.UTC).date()
    days = [today - dt.timedelta(days=n) for n in range(1, topup_days + 1)]
    return [d for d in days if dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC) + settle <= now]


def missing_topups(inputs: DagInputs, days: list[dt.date]) -> list[dict[str, Any]]:
    """TriggerDagRunOperator arguments for each recent day whose run catch-up has not created yet.

    Catch-up creates runs oldest first, ``max_active_runs`` at a time, so a team registered with years of
    history would reach yesterday only after all of it. A top-up run takes the day's place instead: logical
    date D 00:00 (the timetable gives it the data interval [D, D + 1), see
    :mod:`~airflow_provider_duckling.timetables.daily`), conf ``partition_key``, fixed run id ``topup__{key}``.
    When catch-up reaches D, the scheduler skips it (a run with that logical date exists) and goes on.
    Teams paused in the registry, paused DAGs, DAGs without a start date and days before a DAG's start are
    left alone; a day the scheduler has already passed or is about to create (its ``next_dagrun``) is not
    asked about.
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    topups = []
    topup_days, today = settings.topup_days(), dt.datetime.now(dt.UTC).date()
    for duckling in sorted(inputs.ducklings.values(), key=lambda d: d.team_id):
        if duckling.paused:  # paused in the registry: no top-up either
            continue
        for table in TABLES:
            start = start_for(duckling, table, inputs)
            # Days before the daily-from day belong to a history batch (persons: to the full export).
            first_daily = daily_from_for(table, inputs.first_seen.get(duckling.team_id), topup_days, today)
            wanted = [d for d in days if start is not None and d >= start and d >= first_daily]
            if not wanted:
                continue
            dag_id = dag_id_for(table, duckling.team_id)
            try:
                dag = RuntimeTaskInstance.get_dag(dag_id)
            except Exception as exc:  # not parsed yet: the next pass tries again
                log.info("event=topup_skipped dag=%s reason=%s", dag_id, type(exc).__name__)
                continue
            if dag.is_paused:
                continue
            for day in wanted:
                logical_date = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
                if dag.next_dagrun is not None and logical_date <= dag.next_dagrun:
                    continue  # catch-up has passed this day, or creates it next
                if RuntimeTaskInstance.get_dr_count(dag_id=dag_id, logical_dates=[logical_date]):
                    continue
                key = f"{duckling.team_id}_{day.isoformat()}"
                log.info("event=topup dag=%s partition=%s", dag_id, key)
                topups.append({"trigger_dag_id": dag_id, "trigger_run_id": f"topup__{key}",
                               "logical_date": logical_date.isoformat(), "run_after": logical_date.isoformat(),
                               "conf": {"partition_key": key}})
    return topups


def build_topup_dag() -> DAG:
    """Every 15 minutes: run each team's last closed days that its catch-up has not reached yet."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    from airflow_provider_duckling.scheduling.priority import TOPUP_WEIGHT

    # Its few short tasks must not queue behind the catch-up tasks it is there to overtake.
    first = {"priority_weight": TOPUP_WEIGHT, "weight_rule": "absolute"}
    with housekeeping_dag(
        TOPUP_DAG_ID, "*/15 * * * *",
        "Runs the last [duckling] topup_days closed days of each team DAG whose catch-up has not reached them",
    ) as dag:

        @task(task_id="find_missing_topups", **first)
        def find() -> list[dict[str, Any]]:
            days = closed_recent_days(dt.datetime.now(dt.UTC), settings.topup_days(), settings.settle_delay())
            return missing_topups(load_dag_inputs(), days) if days else []

        TriggerDagRunOperator.partial(task_id="topup", skip_when_already_exists=True, **first).expand_kwargs(find())
    return dag


def build_health_dag(problems: list[str]) -> DAG:
    """Hourly: fails with the reason while the registry or remembered start dates cannot be read."""
    with housekeeping_dag(
        HEALTH_DAG_ID, "0 * * * *",
        "Fails while the duckling registry cannot be read (the team DAGs keep their last good state)",
        retries=0,  # its failure is the report
    ) as dag:

        @task(task_id="check_registry")
        def check_registry() -> str:
            current = load_dag_inputs()
            if current.problems:
                raise RuntimeError("duckling registry problem: " + "; ".join(current.problems))
            return f"{len(current.ducklings)} ducklings, registry healthy"

        check_registry()
    dag.doc_md = "Problems at last parse: " + ("; ".join(problems) if problems else "none")
    return dag


def build_maintenance_dag(team_ids: list[int]) -> DAG:
    """Daily: one maintenance pass per duckling (a mapped task each): merge small files, expire old
    snapshots, delete unreferenced files and old never-registered exports. ``dry_run`` reports only."""
    params = {
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Report what would be merged, expired and deleted; change nothing."),
        "snapshot_retention_days": Param(
            settings.snapshot_retention_days(), type="integer", minimum=0, title="Snapshot retention (days)",
            description="Expire snapshots older than this; files only they referenced are deleted."),
        "orphan_retention_days": Param(
            settings.orphan_retention_days(), type="integer", minimum=1, title="Orphan safety window (days)",
            description="Delete exports that were never registered once they are this old."),
        "merge": Param(True, type="boolean", title="Merge small files",
                       description="Merge each table's small daily files into larger ones."),
    }
    with housekeeping_dag(
        MAINTENANCE_DAG_ID, "30 4 * * *",
        "Merges small files, expires old snapshots and removes unreferenced files in every duckling",
        params=params,
    ) as dag:

        @task(task_id="maintain", max_active_tis_per_dag=2, map_index_template="team {{ task.op_kwargs['team_id'] }}")
        def maintain(team_id: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
            from airflow_provider_duckling.transfer.maintenance import run_maintenance

            params = params or {}
            return run_maintenance(
                team_id,
                dry_run=bool(params.get("dry_run", False)),
                snapshot_retention=dt.timedelta(days=int(params.get("snapshot_retention_days", 7))),
                orphan_retention=dt.timedelta(days=int(params.get("orphan_retention_days", 7))),
                merge=bool(params.get("merge", True)),
            )

        maintain.expand(team_id=team_ids)
    return dag


def start_for(duckling: Duckling, table: str, inputs: DagInputs, floor: dt.date | None = None) -> dt.date | None:
    """The registry's explicit start date, else the discovered one (never before the floor)."""
    start = duckling.start_date or inputs.start_dates.get(table, {}).get(duckling.team_id)
    return max(start, floor or settings.start_date_floor()) if start else None


_SHARD_FILE = re.compile(r"_shard_(\d+)_of_(\d+)$")


def shard_of(dag_file: str | Path | None) -> tuple[int, int]:
    """``(shard, shards)`` a DAG file is named for: ``…_shard_3_of_8.py`` builds the teams whose
    ``team_id % 8 == 3``; any other name builds every team (``(0, 1)``)."""
    match = _SHARD_FILE.search(Path(dag_file).stem) if dag_file else None
    if not match:
        return 0, 1
    shard, shards = int(match.group(1)), int(match.group(2))
    if not 0 <= shard < shards:
        raise ValueError(f"{Path(dag_file).name}: shard {shard} of {shards} does not exist (0 … {shards - 1})")
    return shard, shards


def build_dags(registry_path: str | Path | None = None, *, dag_file: str | Path | None = None) -> dict[str, DAG]:
    """Every DAG of this DAG file, or only the one a task runner asked for.

    :param dag_file: the calling DAG file (``__file__``): named ``…_shard_K_of_N.py`` it builds only the
        teams with ``team_id % N == K`` (the housekeeping DAGs live in shard 0), so that thousands of teams
        parse as N files in parallel, each inside Airflow's import timeout.
    """
    wanted = get_parsing_context().dag_id
    shard, shards = shard_of(dag_file)
    inputs = load_dag_inputs(Path(registry_path) if registry_path else None)
    dags: dict[str, DAG] = {}
    housekeeping: dict[str, Any] = {
        DISCOVERY_DAG_ID: build_discovery_dag,
        RETRY_DAG_ID: build_retry_dag,
        TOPUP_DAG_ID: build_topup_dag,
        HEALTH_DAG_ID: lambda: build_health_dag(inputs.problems),
        MAINTENANCE_DAG_ID: lambda: build_maintenance_dag(sorted(t for t, d in inputs.ducklings.items() if not d.paused)),
    } if shard == 0 else {}
    for name, builder in housekeeping.items():
        if not wanted or wanted == name:
            dags[name] = builder()
    config: DagSettings | None = None
    for duckling in inputs.ducklings.values():
        if duckling.team_id % shards != shard:
            continue
        for table in TABLES:
            dag_id = dag_id_for(table, duckling.team_id)
            if not wanted or wanted == dag_id:
                config = config or DagSettings.read()
                dags[dag_id] = build_team_dag(duckling, table, start_for(duckling, table, inputs, config.start_floor),
                                              dag_settings=config, first_seen=inputs.first_seen.get(duckling.team_id))
    return dags
