"""The original system's operating procedures, done the Airflow way (README: "Managing backfills")."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from tests.support.runs import run, team_dag, unregistered_export
from tests.support.stack import DAYS


def _airflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=dict(os.environ), capture_output=True,
                          text=True, timeout=300)


def test_full_historical_backfill_with_airflow_backfill_create(stack):
    """Procedure "Triggering a manual full backfill": one CLI call creates the runs of the days — history in
    batches, as catch-up moves it: here the five days of March 2024 are one run — re-processing completed
    days too; the scheduler executes them (see the real-scheduler suite)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    stack.use(stack.new_duckling(3, "histbf"))
    dag = team_dag(3)  # parsed and stored, as the dag-processor would
    assert run(3, DAYS[0]).state == "success"  # one day already done
    result = _airflow("backfill", "create", "--dag-id", dag.dag_id, "--from-date", DAYS[0].isoformat(),
                      "--to-date", DAYS[-1].isoformat(), "--reprocess-behavior", "completed")
    assert result.returncode == 0, result.stderr[-2000:]
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag.dag_id, DagRun.run_type == "backfill").all()
        intervals = sorted((r.data_interval_start.date(), r.data_interval_end.date()) for r in runs)
    assert intervals == [(DAYS[0], dt.date(2024, 4, 1))]  # every day in one batch, the completed one included


def test_reset_a_duckling_then_rebackfill_from_the_earliest_date(stack):
    """Procedure "Resetting a duckling": one run with delete_tables, then the history again."""
    duckling = stack.new_duckling(2, "reset")
    for day in DAYS[:3]:
        assert run(2, day).state == "success"
    assert run(2, DAYS[4], delete_tables=True).state == "success"
    assert lake_day_counts(duckling, "events") == {DAYS[4]: stack.counts[(2, DAYS[4])]}
    for day in DAYS:  # what the backfill's runs do
        assert run(2, day).state == "success"
    assert lake_day_counts(duckling, "events") == clickhouse_day_counts(ClickHouseHook(), 2)


def test_a_stuck_export_is_bounded_and_explained(stack, capfd):
    """Procedure "Partition stuck in Running": tasks carry an execution timeout, and ClickHouse limits
    given in clickhouse_settings reach the server and fail the task with ClickHouse's own words."""
    stack.new_duckling(1, "stuck")
    dag = team_dag(1)
    assert dag.get_task("export").execution_timeout is not None
    failed = run(1, DAYS[0], clickhouse_settings={"max_rows_to_read": 10, "read_overflow_mode": "throw"})
    assert failed.state == "failed"
    out, err = capfd.readouterr()
    assert "Limit for rows" in out + err or "TOO_MANY_ROWS" in out + err


def test_orphaned_files_are_left_alone_and_never_registered(stack):
    """Procedure "Orphaned files in S3": a failed run's file stays, is never referenced, and the next
    run registers its own new file."""
    duckling = stack.new_duckling(1, "orphan")
    assert unregistered_export(1, DAYS[0]).state == "success"  # an export whose register never ran
    (orphan,) = stack.keys(duckling.bucket)
    assert run(1, DAYS[0]).state == "success"
    keys = stack.keys(duckling.bucket)
    assert orphan in keys and len(keys) == 2
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook

    with DuckLakeHook().attach(duckling) as con:
        live = [f for (f,) in con.execute("SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall()]
    assert live == [f"s3://{duckling.bucket}/{k}" for k in keys if k != orphan]
    assert lake_day_counts(duckling, "events") == {DAYS[0]: stack.counts[(1, DAYS[0])]}
