"""Running the generated DAGs in tests: load them from the real DAG folder and dag.test() one day."""

from __future__ import annotations

import datetime as dt
import os

from airflow_provider_duckling.domain.partitions import dag_id_for
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.scheduling.airflow_env import load_dags, run_day

PARSING_CONTEXT = "_AIRFLOW_PARSING_CONTEXT_DAG_ID"  # airflow.sdk.definitions.context


def team_dag(team_id: int, table: str = "events"):
    """One team DAG, parsed and serialized the way a worker asks for it: the DAG file builds only the DAG
    Airflow's parsing context names (a bag of one instead of every team's, so each run's sync is short)."""
    dag_id = dag_id_for(table, team_id)
    previous = os.environ.get(PARSING_CONTEXT)
    os.environ[PARSING_CONTEXT] = dag_id
    try:
        bag = load_dags()
    finally:
        if previous is None:
            os.environ.pop(PARSING_CONTEXT, None)
        else:
            os.environ[PARSING_CONTEXT] = previous
    assert not bag.import_errors, bag.import_errors
    assert list(bag.dag_ids) == [dag_id], bag.dag_ids
    return bag.get_dag(dag_id)


def run(team_id: int, day: dt.date, table: str = "events", **conf):
    """dag.test() the run for ``day`` with ``conf`` as Params; returns the DagRun."""
    return run_day(team_dag(team_id, table), day, run_conf=conf or None)


def failed_scheduled_run(dag_id: str, day: dt.date, end: dt.date | None = None) -> str:
    """A scheduled run of ``day`` (to ``end``, exclusive: a history batch) whose export failed after its
    retries, as the scheduler leaves it (the DAG must be serialised already); returns its run id."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    stop = dt.datetime.combine(end or day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    run_id = f"scheduled__{stop.isoformat()}"  # Airflow names it by run_after
    with create_session() as session:
        dag = SerializedDagModel.get_dag(dag_id, session=session)
        dag_run = dag.create_dagrun(
            run_id=run_id, logical_date=start, data_interval=(start, stop),
            run_after=stop, conf={}, run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TEST, state=DagRunState.FAILED, session=session,
        )
        for ti in dag_run.get_task_instances(session=session):
            ti.state = {"export": TaskInstanceState.FAILED, "register": TaskInstanceState.UPSTREAM_FAILED}.get(
                ti.task_id, TaskInstanceState.SUCCESS)
    return run_id


def snapshot_id(duckling) -> int:
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        return con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]


def catalog_tables(stack, duckling) -> int:
    """How many tables the duckling's PostgreSQL catalog database holds (0 = never initialised)."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user=stack.postgres.user,
                            password=stack.postgres.password, dbname=duckling.db_name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
            return cur.fetchone()[0]
    finally:
        conn.close()


def logged_text(caplog, capfd) -> str:
    """Everything the runs logged so far: stdlib records and what Airflow's task logger printed."""
    out, err = capfd.readouterr()
    records = "\n".join(r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records)
    return "\n".join((records, out, err))


def unregistered_export(team_id: int, day: dt.date, table: str = "events"):
    """dag.test() the run for ``day`` with its register task marked success without running: an export
    whose registration never happened (a killed worker), i.e. a genuine orphan. (A run with
    ``skip_ducklake_registration`` is not one: its files are kept on purpose, with a marker.)"""
    logical = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0, 1), tzinfo=dt.UTC)
    return team_dag(team_id, table).test(logical_date=logical, mark_success_pattern="^register$")


def return_value(dag_run, task_id: str):
    """The value a task of ``dag_run`` returned (its ``return_value`` XCom), as Airflow stored it."""
    import json

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
            XComModel.task_id == task_id, XComModel.key == "return_value"))
    return json.loads(value) if isinstance(value, str) else value
