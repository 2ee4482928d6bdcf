"""The real worker path: a catch-up of 3 teams × 3 days, and of one team's 100 days of history in monthly
batches, through a real scheduler, api-server, dag-processor and LocalExecutor started here (dag.test()
does not enforce Airflow 3's worker rules); then a backfill, manual runs of one day, a cleared history
batch and a backfill over history, each leaving every day exact and each day's asset events one per move."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
from airflow_provider_duckling.domain.history import batch_end, catchup_runs
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import write_registry
from airflow_provider_duckling.registry.settings import history_batch_months
from tests.conftest import SESSION_DIR
from tests.support.airflow_stack import make_airflow_stack, new_metadata_db

TEAMS = [21, 22, 23]
HISTORY_TEAM, HISTORY_DAYS = 24, 100


@pytest.mark.slow
def test_catch_up_through_a_real_scheduler(stack):
    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=n) for n in (3, 2, 1)]
    ch = ClickHouseHook()
    for team in TEAMS:
        for index, day in enumerate(days):
            insert_events(ch, team, day, 100 + 10 * index + team)
    ducklings = [stack.new_duckling(team, "realsched", start_date=days[0]) for team in TEAMS]
    history_start = today - dt.timedelta(days=HISTORY_DAYS)
    insert_events(ch, HISTORY_TEAM, history_start, 30, days=HISTORY_DAYS)
    history = stack.new_duckling(HISTORY_TEAM, "realsched", start_date=history_start)
    registry = SESSION_DIR / "real-scheduler" / "ducklings.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    write_registry([*ducklings, history], registry)
    # Not seen by discovery yet: the daily-from day counts from today ([duckling] topup_days, 3, before it).
    daily_from = today - dt.timedelta(days=3)
    wanted = {f"duckling_events_backfill_team_{team}": len(days) for team in TEAMS}
    wanted |= {f"duckling_persons_backfill_team_{team}": 1 for team in (*TEAMS, HISTORY_TEAM)}  # one full export
    months = history_batch_months()  # 3: calendar quarters
    wanted[f"duckling_events_backfill_team_{HISTORY_TEAM}"] = catchup_runs(history_start, today, daily_from, "month", months)
    assert wanted[f"duckling_events_backfill_team_{HISTORY_TEAM}"] <= 6  # 100 days: 2-3 quarters and 3 days

    metadata_url = new_metadata_db(stack.postgres, "airflow_meta")
    airflow = make_airflow_stack(SESSION_DIR / "real-scheduler" / "home", dict(os.environ), metadata_url, {
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
    })
    airflow.start()
    try:
        deadline = time.monotonic() + 600
        done: dict[str, int] = {}
        while time.monotonic() < deadline:
            done = _successful_runs(stack)
            if all(done.get(dag_id, 0) >= n for dag_id, n in wanted.items()):
                break
            time.sleep(5)
        assert all(done.get(dag_id, 0) >= n for dag_id, n in wanted.items()), (
            f"runs done: {done}, wanted {wanted}\nscheduler:\n{airflow.log_tail('scheduler')}"
        )
        history_dag = f"duckling_events_backfill_team_{HISTORY_TEAM}"
        _wait_finished(stack, history_dag)
        batches = _intervals(stack, history_dag)
        assert len(batches) == wanted[history_dag] and done[history_dag] == wanted[history_dag]
        _assert_tiles(batches, history_start, today)
        for start, end in batches:  # quarters (clipped) before the daily-from day, single days after it
            assert end == batch_end(start, daily_from, "month", months), (start, end)
        assert lake_day_counts(history, "events") == clickhouse_day_counts(ch, HISTORY_TEAM)
        assert _asset_events(stack, history_dag) == {f"{HISTORY_TEAM}_{d}": 1 for d in _days(history_start, today)}

        # Clearing a history batch moves its days again, exactly once each.
        cleared_start, cleared_end = batches[1]
        result = airflow.airflow("tasks", "clear", history_dag, "--start-date", cleared_start.isoformat(),
                                 "--end-date", cleared_start.isoformat(), "--yes")
        assert result.returncode == 0, result.stderr[-2000:]
        _wait_events(stack, history_dag, {f"{HISTORY_TEAM}_{d}" for d in _days(cleared_start, cleared_end)}, 2)
        _wait_finished(stack, history_dag)
        again = set(_days(cleared_start, cleared_end))
        assert _asset_events(stack, history_dag) == {f"{HISTORY_TEAM}_{d}": 2 if d in again else 1
                                                     for d in _days(history_start, today)}
        assert lake_day_counts(history, "events") == clickhouse_day_counts(ch, HISTORY_TEAM)
        assert len(_intervals(stack, history_dag)) == len(batches)  # the same run, not a new one

        # airflow backfill create over history walks the same batches (re-processing what is done).
        first_batch = batches[0]
        result = airflow.airflow("backfill", "create", "--dag-id", history_dag, "--from-date",
                                 first_batch[0].isoformat(), "--to-date", first_batch[0].isoformat(),
                                 "--reprocess-behavior", "completed")
        assert result.returncode == 0, result.stderr[-2000:]
        _wait_events(stack, history_dag, {f"{HISTORY_TEAM}_{d}" for d in _days(*first_batch)}, 2)
        _wait_finished(stack, history_dag)
        assert _intervals(stack, history_dag) == batches  # the backfill re-used the batch's own run and interval
        assert lake_day_counts(history, "events") == clickhouse_day_counts(ch, HISTORY_TEAM)
        with DuckLakeHook().attach(history) as con:
            live = [f for (f,) in con.execute(
                "SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall()]
        assert len(live) == HISTORY_DAYS  # one file per day, whatever moved it how often

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


def _days(first: dt.date, end: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((end - first).days)]


def _query(stack, sql: str, *args) -> list[tuple]:
    return stack.postgres.query(sql, *args, database="airflow_meta")


def _intervals(stack, dag_id: str) -> list[tuple[dt.date, dt.date]]:
    """(first day, day after the last) of each run's data interval, oldest first."""
    return [(a.date(), b.date()) for a, b in _query(
        stack, "SELECT data_interval_start, data_interval_end FROM dag_run WHERE dag_id = %s ORDER BY logical_date", dag_id)]


def _assert_tiles(intervals: list[tuple[dt.date, dt.date]], first: dt.date, end: dt.date) -> None:
    """The intervals cover first ≤ day < end exactly once: no day left out, none run twice by the schedule."""
    assert intervals[0][0] == first and intervals[-1][1] == end, intervals
    assert all(a[1] == b[0] for a, b in zip(intervals, intervals[1:], strict=False)), intervals


def _asset_events(stack, dag_id: str) -> dict[str, int]:
    return dict(_query(stack, "SELECT partition_key, count(*) FROM asset_event WHERE source_dag_id = %s "
                              "GROUP BY partition_key", dag_id))


def _wait_events(stack, dag_id: str, keys: set[str], count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _asset_events(stack, dag_id)
        if all(events.get(k, 0) >= count for k in keys):
            return
        time.sleep(3)
    raise AssertionError(f"{dag_id}: asset events {_asset_events(stack, dag_id)}, wanted {count} for {sorted(keys)}")


def _wait_finished(stack, dag_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _all_finished(stack, dag_id):
        time.sleep(3)
    assert _all_finished(stack, dag_id)


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
