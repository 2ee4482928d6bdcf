"""The real worker path: a catch-up of 3 teams × 3 days through a real scheduler, api-server,
dag-processor and LocalExecutor started here (dag.test() does not enforce Airflow 3's worker rules)."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import write_registry
from tests.conftest import SESSION_DIR
from tests.support.airflow_stack import make_airflow_stack, new_metadata_db

TEAMS = [21, 22, 23]


@pytest.mark.slow
def test_catch_up_through_a_real_scheduler(stack):
    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=n) for n in (3, 2, 1)]
    ch = ClickHouseHook()
    for team in TEAMS:
        for index, day in enumerate(days):
            insert_events(ch, team, day, 100 + 10 * index + team)
    ducklings = [stack.new_duckling(team, "realsched", start_date=days[0]) for team in TEAMS]
    registry = SESSION_DIR / "real-scheduler" / "ducklings.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    write_registry(ducklings, registry)

    metadata_url = new_metadata_db(stack.postgres, "airflow_meta")
    airflow = make_airflow_stack(SESSION_DIR / "real-scheduler" / "home", dict(os.environ), metadata_url, {
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
    })
    airflow.start()
    try:
        expected = {f"duckling_{table}_backfill_team_{team}" for team in TEAMS for table in ("events", "persons")}
        deadline = time.monotonic() + 600
        done: dict[str, int] = {}
        while time.monotonic() < deadline:
            done = _successful_runs(stack)
            if all(done.get(dag_id, 0) >= len(days) for dag_id in expected):
                break
            time.sleep(5)
        assert all(done.get(dag_id, 0) >= len(days) for dag_id in expected), (
            f"runs done: {done}\nscheduler:\n{airflow.log_tail('scheduler')}"
        )

        # Overlapping work on one team's days: a backfill re-processing every day, plus two manual runs of
        # the middle day, all at once. Their registrations race; the lake must end exact, one file per day.
        dag_id = f"duckling_events_backfill_team_{TEAMS[0]}"
        before = _successful_runs(stack).get(dag_id, 0)
        result = airflow.airflow("backfill", "create", "--dag-id", dag_id, "--from-date", days[0].isoformat(),
                                 "--to-date", days[-1].isoformat(), "--reprocess-behavior", "completed")
        assert result.returncode == 0, result.stderr[-2000:]
        middle = f"{TEAMS[0]}_{days[1].isoformat()}"
        for n in range(2):
            result = airflow.airflow("dags", "trigger", dag_id, "--run-id", f"overlap_{n}",
                                     "--conf", json.dumps({"partition_key": middle}))
            assert result.returncode == 0, result.stderr[-2000:]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _all_finished(stack, dag_id):
            time.sleep(5)
        assert _all_finished(stack, dag_id)
        assert _successful_runs(stack).get(dag_id, 0) >= before + 2  # the manual runs (backfill reuses runs)
    finally:
        airflow.stop()
    for duckling in ducklings:
        assert lake_day_counts(duckling, "events") == {d: n for d, n in clickhouse_day_counts(ch, duckling.team_id).items()
                                                       if d in days}
    with DuckLakeHook().attach(ducklings[0]) as con:
        live = [f for (f,) in con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall()]
    assert len(live) == len(days)


def _all_finished(stack, dag_id: str) -> bool:
    """No run of ``dag_id`` is queued or running, and none failed."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user=stack.postgres.user,
                            password=stack.postgres.password, dbname="airflow_meta")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT state, count(*) FROM dag_run WHERE dag_id = %s GROUP BY state", [dag_id])
            states = dict(cur.fetchall())
    finally:
        conn.close()
    if states.get("failed"):
        from tests.conftest import SESSION_DIR

        logs = [p for p in (SESSION_DIR / "real-scheduler" / "home" / "logs").rglob("*")
                if p.is_file() and dag_id in str(p) and ("overlap" in str(p) or "backfill" in str(p))]
        details = "\n".join(f"{p}: {p.read_text(errors='replace')[-700:]}" for p in logs)
        raise AssertionError(f"failed runs of {dag_id}: {states}\n{details}")
    return not states.get("queued") and not states.get("running")


def _successful_runs(stack) -> dict[str, int]:
    """Successful runs per DAG, read straight from the metadata database."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user=stack.postgres.user,
                            password=stack.postgres.password, dbname="airflow_meta")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT dag_id, count(*) FROM dag_run WHERE state = 'success' GROUP BY dag_id")
            return dict(cur.fetchall())
    finally:
        conn.close()
