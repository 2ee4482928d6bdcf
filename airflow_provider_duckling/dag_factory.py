"""Per-team DAGs generated from the duckling registry.

One DAG per team and table, ``duckling_{table}_backfill_team_{team_id}``: export → register, one run per
UTC day. The schedule is a data-interval timetable, so the run for day D starts only once D has ended,
and ``catchup=True`` from the team's start date makes Airflow's catch-up the historical backfill while
the daily run tops up the day that just ended.

Parsing reads one local YAML file and nothing else: no ClickHouse, S3 or PostgreSQL at parse time. When
Airflow runs a task it tells the parser which DAG it needs, and only that DAG is built.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable, get_parsing_context

from airflow_provider_duckling.catalog import Duckling, load_registry
from airflow_provider_duckling.operators.clickhouse_to_s3 import ClickHouseToDucklingS3Operator
from airflow_provider_duckling.operators.ducklake_register import DuckLakeRegisterOperator

log = logging.getLogger(__name__)

TABLES = ("events",)
DEFAULT_START_DATE = dt.date(2020, 1, 1)
DAY_TEMPLATE = "{{ data_interval_start.strftime('%Y-%m-%d') }}"
DEFAULT_ARGS = {
    "owner": "duckling",
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(hours=1),
}


def dag_id_for(table: str, team_id: int) -> str:
    return f"duckling_{table}_backfill_team_{team_id}"


def build_team_dag(duckling: Duckling, table: str = "events", *, max_active_runs: int = 4) -> DAG:
    """The DAG that back-fills and tops up ``table`` for one duckling."""
    start = duckling.start_date or DEFAULT_START_DATE
    with DAG(
        dag_id=dag_id_for(table, duckling.team_id),
        description=f"Back-fill and daily top-up of {table} into team {duckling.team_id}'s duckling",
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC),
        catchup=True,
        max_active_runs=max_active_runs,
        default_args=DEFAULT_ARGS,
        is_paused_upon_creation=False,
        tags=["duckling", table, f"team:{duckling.team_id}"],
        doc_md=__doc__,
    ) as dag:
        export = ClickHouseToDucklingS3Operator(
            task_id="export", team_id=duckling.team_id, day=DAY_TEMPLATE, table=table
        )
        register = DuckLakeRegisterOperator(
            task_id="register", team_id=duckling.team_id, day=DAY_TEMPLATE, table=table, export_task_id="export"
        )
        export >> register
    return dag


def build_dags(registry_path: str | Path | None = None) -> dict[str, DAG]:
    """Every team's DAGs, or only the one a task runner asked for."""
    wanted = get_parsing_context().dag_id
    dags: dict[str, DAG] = {}
    for duckling in load_registry(registry_path).values():
        for table in TABLES:
            dag_id = dag_id_for(table, duckling.team_id)
            if wanted and wanted != dag_id:
                continue
            dags[dag_id] = build_team_dag(duckling, table)
    return dags
