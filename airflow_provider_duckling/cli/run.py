"""``duckling run PARTITION_KEY``: move one partition (or a range of days, ``{team}_{first}..{last}``, as one
batch) through Airflow, with the original system's options.

Everything is validated before anything happens (the key, the team against the registry the DAGs are built
from, the table, the options): a mistake exits 2 having written nothing, not even a DAG run. Then either

* (default) a manual DAG run is created in Airflow's metadata DB, as ``airflow dags trigger`` does, with
  ``conf = {"partition_key": …, options…}``; ``--wait`` follows it until it ends; or
* ``--local`` runs it in this process with ``dag.test()`` (no scheduler needed: a laptop, a one-off).

The outcome (rows, files, snapshot) comes from the register task's XCom, and how the run ended from the
``outcome`` its tasks recorded (:mod:`~airflow_provider_duckling.domain.outcomes`): a run that moved nothing
shows as ``skipped``, never ``success``. Exit 1 when the run failed or nothing ran.

A day before the DAG's start: Airflow gives a run whose logical date precedes the DAG's start no task, so
``--local`` (which needs a logical date on the day) refuses it, exit 2, naming the start and how to move it;
a triggered run has no logical date and moves it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
import time
from typing import Any

from rich.console import Console

from airflow_provider_duckling.cli.errors import OK, PROBLEMS, RunNotStarted, UsageError
from airflow_provider_duckling.cli.render import emit_json, progress, table
from airflow_provider_duckling.common.errors import ConfigurationError
from airflow_provider_duckling.common.redaction import scrub
from airflow_provider_duckling.domain import outcomes
from airflow_provider_duckling.domain.outcomes import Outcome
from airflow_provider_duckling.domain.partitions import DayRange, Partition, parse_key, run_id_part
from airflow_provider_duckling.registry.catalog import Duckling, get_duckling
from airflow_provider_duckling.registry.options import parse_clickhouse_settings
from airflow_provider_duckling.transfer.export import merged_settings

TASKS = ("wait_for_late_events", "export", "register")
_DONE = ("success", "failed", "skipped", "upstream_failed", "removed")


def build_conf(args: argparse.Namespace, partition: Partition | DayRange) -> dict[str, Any]:
    """The DAG run conf: the partition and only the options the user changed (Params fill the rest)."""
    conf: dict[str, Any] = {"partition_key": partition.key}
    if args.clickhouse_settings is not None:
        try:
            settings = parse_clickhouse_settings(args.clickhouse_settings)
            merged_settings(settings)  # names and values validated here, before anything runs
        except ConfigurationError as exc:
            raise UsageError(f"--clickhouse-settings: {exc}") from None
        conf["clickhouse_settings"] = settings
    flags = {
        "dry_run": ("dry_run", True), "skip_schema_validation": ("skip_schema_validation", True),
        "no_create_tables": ("create_tables_if_missing", False), "delete_tables": ("delete_tables", True),
        "skip_registration": ("skip_ducklake_registration", True), "no_cleanup": ("cleanup_existing_partition_data", False),
    }
    for flag, (option, value) in flags.items():
        if getattr(args, flag):
            conf[option] = value
    if args.full_export:
        if args.table != "persons":
            raise UsageError("--full-export applies to --table persons only; events move one UTC day at a time")
        conf["full_export"] = True
    return conf


def _confirm_delete(args: argparse.Namespace, team_id: int) -> None:
    """``--delete-tables`` drops every day of the table: ask (on a terminal) or require ``--yes``."""
    if not args.delete_tables or args.yes or args.dry_run:
        return
    question = (f"--delete-tables drops posthog.{args.table} in team {team_id}'s duckling (every day) before "
                f"registering this run. Type the team id to confirm: ")
    if sys.stdin.isatty():
        if input(question).strip() == str(team_id):
            return
        raise UsageError("not confirmed; nothing done")
    raise UsageError("--delete-tables drops every day of the table: add --yes to confirm; nothing done")


def run(args: argparse.Namespace, out: Console) -> int:
    """Validate, then trigger (optionally wait) or run locally; exit 1 when the run does not succeed."""
    from airflow_provider_duckling.domain.partitions import dag_id_for

    partition = parse_key(args.partition_key)
    duckling = get_duckling(partition.team_id)  # the registry the DAGs are built from
    conf = build_conf(args, partition)
    _confirm_delete(args, partition.team_id)
    dag_id = dag_id_for(args.table, partition.team_id)
    as_json = bool(getattr(args, "json", False))
    if args.local:
        return _local(dag_id, partition, conf, out, as_json, duckling)
    run_id, state, paused = _trigger(dag_id, partition, conf)
    if as_json and not args.wait:
        emit_json(out, {"dag_id": dag_id, "run_id": run_id, "state": state, "conf": conf, "dag_paused": paused,
                        "team_paused": duckling.paused})
        return OK
    if not as_json:
        out.print(f"Triggered {dag_id}: run {run_id} ({state}), conf {json.dumps(conf, sort_keys=True)}")
        if paused:
            out.print(f"Note: {dag_id} is paused; the run waits until it is unpaused.")
        if duckling.paused:
            out.print(f"Note: team {partition.team_id} is paused in the registry; a run by hand still moves its day.")
        start = _dag_start(dag_id)
        first = partition.first if isinstance(partition, DayRange) else partition.day
        if start is not None and first < start and not conf.get("full_export"):
            out.print(f"Note: {partition.key} lies (partly) before the DAG's start ({start}); a run without a logical "
                      "date moves it all the same.")
    if not args.wait:
        out.print(f"Follow it in the UI (DAG {dag_id}) or with: duckling status {partition.team_id}")
        return OK
    return _wait(dag_id, run_id, out, args.timeout, args.poll_interval, as_json)


def _trigger(dag_id: str, partition: Partition | DayRange, conf: dict[str, Any]) -> tuple[str, str, bool]:
    """Create a queued manual DAG run (what ``airflow dags trigger`` does); the scheduler picks it up.
    Returns the run id, its state and whether the DAG is paused."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    key = f"{partition.team_id}_full" if conf.get("full_export") else partition.key
    run_id = f"manual__duckling-cli__{run_id_part(key)}__{stamp}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    try:
        dag_run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.CLI, run_id=run_id, conf=conf,
                              triggering_user_name=user)
    except DagNotFound:
        raise RunNotStarted(f"DAG {dag_id} is not in Airflow's metadata DB yet: the dag-processor has not parsed the "
                            "registry since this team was added (or use --local)") from None
    with create_session() as session:
        model = session.get(DagModel, dag_id)
        paused = bool(model and model.is_paused)
    state = getattr(getattr(dag_run, "state", None), "value", "queued")
    return run_id, str(state), paused


def _wait(dag_id: str, run_id: str, out: Console, timeout: float, poll: float, as_json: bool = False) -> int:
    """Poll the run until it ends, showing its tasks; exit 1 on failure or when ``timeout`` seconds pass."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    started, shown = time.monotonic(), 0
    with progress(out, run_id, len(TASKS)) as advance:
        while True:
            with create_session() as session:
                dag_run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
                state = str(getattr(dag_run.state, "value", dag_run.state))
                tasks = {ti.task_id: str(getattr(ti.state, "value", ti.state))
                         for ti in dag_run.get_task_instances(session=session)}
            done = sum(1 for s in tasks.values() if s in _DONE)
            current = next((t for t in TASKS if tasks.get(t) not in _DONE), "")
            advance(done - shown, note=f"{state} {current}".strip())
            shown = done
            if state in ("success", "failed"):
                break
            if timeout and time.monotonic() - started >= timeout:
                if as_json:
                    emit_json(out, {"dag_id": dag_id, "run_id": run_id, "state": state, "timed_out": True})
                    return PROBLEMS
                out.print(f"Run {run_id} is still {state} after {timeout:g} s (is a scheduler running?); it goes on "
                          "in Airflow.")
                return PROBLEMS
            time.sleep(poll)
    return report(dag_id, run_id, out, as_json)


def _local(dag_id: str, partition: Partition | DayRange, conf: dict[str, Any], out: Console, as_json: bool = False,
           duckling: Duckling | None = None) -> int:
    """``dag.test()`` the run in this process, after storing the DAGs as the dag-processor would."""
    from airflow.configuration import conf as airflow_conf

    from airflow_provider_duckling.scheduling.airflow_env import load_dags

    bag = load_dags(airflow_conf.get("core", "dags_folder"))
    dag = bag.get_dag(dag_id)
    if dag is None:
        errors = "; ".join(f"{path}: {str(err).strip().splitlines()[-1]}" for path, err in bag.import_errors.items())
        raise RunNotStarted(scrub(f"DAG {dag_id} was not built from the DAGs folder" + (f" ({errors})" if errors else "")))
    day = local_day(dag, partition, conf, duckling)
    if not as_json:
        out.print(f"Running {dag_id} for {conf.get('partition_key')} in this process (dag.test) …")
    dag_run = dag.test(logical_date=local_logical_date(day), run_conf=conf)
    if dag_run.data_interval_start is None or dag_run.data_interval_start.date() != day:
        raise RunNotStarted(f"{dag_id}: the local run covers {dag_run.data_interval_start}, not {day}")
    return report(dag_id, dag_run.run_id, out, as_json)


def local_day(dag: Any, partition: Partition | DayRange, conf: dict[str, Any], duckling: Duckling | None) -> dt.date:
    """The day whose data interval the local run takes: the key's (last) day; a full export, which moves no
    single day, takes the DAG's start when its key is older.

    Airflow creates no task for a run whose logical date precedes the DAG's start (the run would "succeed"
    having done nothing), so a day before the start is refused here, with the ways to move it."""
    day = partition.last if isinstance(partition, DayRange) else partition.day  # a range: its conf names the days
    start = dag.start_date.astimezone(dt.UTC).date() if dag.start_date else None
    if start is None or day >= start:
        return day
    if conf.get("full_export"):
        return start
    raise UsageError(before_start_message(dag.dag_id, partition, start, duckling))


def before_start_message(dag_id: str, partition: Partition | DayRange, start: dt.date, duckling: Duckling | None) -> str:
    """One line: the day, the DAG's start and where it comes from, and how to move the day."""
    from airflow_provider_duckling.registry import settings

    if duckling is not None and duckling.start_date == start:
        source = "the registry's start_date"
    elif start == settings.start_date_floor():
        source = "[duckling] start_date_floor"
    else:
        source = "its discovered start date"
    team, key = partition.team_id, partition.key
    if dag_id.startswith("duckling_persons_"):
        how = (f"persons before the start are the full export's: duckling run {key} --table persons --full-export "
               "--local")
    else:
        how = (f"duckling run {key} (without --local: a manual run has no logical date, and the scheduler runs "
               f"it), or set an earlier start_date for team {team} in the registry")
    span = "ends" if isinstance(partition, DayRange) else "is"
    return f"{key} {span} before the start of {dag_id} ({start}, {source}), so --local cannot run it; nothing done. To move it: {how}"


def local_logical_date(day: dt.date) -> dt.datetime:
    """A logical date whose inferred data interval is ``day``, unique to this run.

    A manual run's interval is the last one that ended before its logical date, so any instant in
    (D + 1 00:00, D + 2 00:00) means day D. It is never midnight (D + 1's scheduled run) and never repeats:
    ``dag.test()`` deletes an earlier run with the same logical date, and the history of earlier runs
    (a failure, say) must stay visible to ``duckling status`` and in the UI.
    """
    offset = dt.timedelta(seconds=1, microseconds=time.time_ns() // 1000 % (86_000 * 10**6))
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC) + offset


def report(dag_id: str, run_id: str, out: Console, as_json: bool = False) -> int:
    """One table (or JSON document) with the run's outcome, from the metadata DB and the register (or export)
    task's XCom. A dry run's rows and files are what it would write (the export counted them). A run that
    moved nothing shows as ``skipped`` (Airflow says *success*), its outcome saying why."""
    facts = _read_run(dag_id, run_id)
    state, tasks, exported, registered = facts["state"], facts["tasks"], facts["export"], facts["register"]
    failed = sorted(task for task, task_state in tasks.items() if task_state in ("failed", "upstream_failed"))
    outcome = facts["outcome"] or _derived_outcome(state, tasks, exported, registered, dag_id)
    shown = "skipped" if state == "success" and not (outcome and outcome.moved) else state
    detail = outcome.detail if outcome else "–"
    rows = [(
        registered.get("partition") or exported.get("partition") or facts["asked"] or "–", shown, detail,
        registered.get("rows", exported.get("rows", "–")), _files(registered, exported),
        registered.get("deleted_rows", "–"), registered.get("snapshot_id", "–"),
    )]
    code = OK if state == "success" and not (outcome and outcome.code == outcomes.BEFORE_START) else PROBLEMS
    invalid_utf8 = registered.get("invalid_utf8", exported.get("invalid_utf8")) or {}
    if as_json:
        partition, _, _, rows_, files, deleted, snapshot = rows[0]
        dry = bool(exported.get("dry_run") or registered.get("dry_run") or (outcome and outcome.code == outcomes.DRY_RUN))
        emit_json(out, {
            "dag_id": dag_id, "run_id": run_id, "partition": partition, "state": shown, "airflow_state": state,
            "outcome": outcome.code if outcome else None, "detail": detail, "moved": bool(outcome and outcome.moved),
            "dry_run": dry, "rows": _number(rows_), "bytes": None if dry else _number(exported.get("bytes", "–")),
            "files": _number(files),
            "replaced_rows": _number(deleted), "snapshot_id": _number(snapshot), "failed_tasks": failed,
            "invalid_utf8": invalid_utf8,
        })
        return code
    out.print(table(f"{dag_id} · {run_id}", ("partition", "state", "outcome", "rows", "files", "replaced rows", "snapshot"),
                    rows, right=("rows", "files", "replaced rows", "snapshot")))
    if invalid_utf8:
        out.print(f"{sum(invalid_utf8.values())} text value(s) were not valid UTF-8 and were written with U+FFFD in "
                  f"place of each invalid sequence ({', '.join(f'{c}: {n}' for c, n in invalid_utf8.items())}).")
    if failed:
        out.print(f"Failed task(s): {', '.join(failed)}. Its log has one event=task_failed line with the reason.")
    return code


def _read_run(dag_id: str, run_id: str) -> dict[str, Any]:
    """The run's state, asked partition, task states, export and register results, and recorded outcome
    (register's, else export's)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    def xcom(session: Any, task_id: str, key: str) -> Any:
        row = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=task_id, key=key)).first()
        return XComModel.deserialize_value(row) if row is not None else None

    with create_session() as session:
        dag_run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        facts: dict[str, Any] = {
            "state": str(getattr(dag_run.state, "value", dag_run.state)),
            "asked": (dag_run.conf or {}).get("partition_key"),
            "tasks": {ti.task_id: str(getattr(ti.state, "value", ti.state))
                      for ti in dag_run.get_task_instances(session=session)},
        }
        for task_id in ("export", "register"):
            facts[task_id] = xcom(session, task_id, "return_value") or {}
        recorded = [Outcome.from_xcom(xcom(session, task_id, outcomes.XCOM_KEY)) for task_id in ("register", "export")]
    facts["outcome"] = next((o for o in recorded if o is not None), None)
    return facts


def _derived_outcome(state: str, tasks: dict[str, str], exported: dict[str, Any], registered: dict[str, Any],
                     dag_id: str) -> Outcome | None:
    """The outcome of a run whose tasks recorded none: a run of an earlier release, or one that had no task
    at all (Airflow's rule for a logical date before the DAG's start). ``None`` while it runs or failed."""
    if exported.get("dry_run") or registered.get("dry_run"):
        return outcomes.dry_run()
    if registered.get("skipped") or (exported and tasks.get("register") == "skipped"):
        return outcomes.not_registered()
    if registered:
        return outcomes.registered()
    if state == "success" and not tasks:
        return outcomes.before_start(_dag_start(dag_id))
    return None


def _dag_start(dag_id: str) -> dt.date | None:
    """The start date of the DAG as last parsed (``None`` if it cannot be read)."""
    from airflow.models.serialized_dag import SerializedDagModel

    try:
        dag = SerializedDagModel.get_dag(dag_id)
    except Exception:  # noqa: BLE001 - only a detail of the message
        return None
    start = getattr(dag, "start_date", None)
    return start.astimezone(dt.UTC).date() if start else None


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _files(registered: dict[str, Any], exported: dict[str, Any]) -> int | str:
    """Files registered (a count in register's XCom), else files exported (a list in export's)."""
    if isinstance(registered.get("files"), int):
        return registered["files"]
    files = exported.get("files")
    return len(files) if isinstance(files, list) else "–"
