"""Fair catch-up: one team back-filling two years does not starve the other teams' daily top-ups, and
never runs more exports at once than the export pool allows. Through a real scheduler, api-server,
dag-processor and LocalExecutor on loopback."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry.catalog import write_registry
from airflow_provider_duckling.scheduling.dag_factory import dag_id_for
from airflow_provider_duckling.scheduling.priority import HISTORY_WEIGHT, TOPUP_WEIGHT, run_day, weight_for
from tests.conftest import SESSION_DIR
from tests.support.airflow_stack import make_airflow_stack, new_metadata_db

HISTORY_TEAM, TOPUP_TEAMS = 24, [25, 26]
POOL_SLOTS = 2


def test_top_ups_and_manual_runs_outrank_history():
    today = dt.date(2026, 11, 27)
    assert run_day("scheduled__2026-11-27T00:00:00+00:00") == today
    assert weight_for("scheduled__2026-11-27T00:00:00+00:00", today, 3) == TOPUP_WEIGHT
    assert weight_for("scheduled__2026-11-24T00:00:00+00:00", today, 3) == TOPUP_WEIGHT
    assert weight_for("scheduled__2026-11-23T00:00:00+00:00", today, 3) == HISTORY_WEIGHT
    assert weight_for("backfill__2024-11-27T00:00:00+00:00", today, 3) == HISTORY_WEIGHT
    assert weight_for("manual__2026-11-27T10:11:12.123+00:00", today, 3) == TOPUP_WEIGHT
    assert weight_for("later_pass__12_2026-11-26", today, 3) == TOPUP_WEIGHT
    assert weight_for("my-own-run-id", today, 3) == TOPUP_WEIGHT  # no date: a person is waiting
    # A batch of history is named by its end, which may be recent: the DAG's daily-from day tells it apart.
    daily_from = dt.date(2026, 11, 24)
    assert weight_for("scheduled__2026-11-24T00:00:00+00:00", today, 3, daily_from) == HISTORY_WEIGHT  # [Nov 1, Nov 24)
    assert weight_for("backfill__2026-11-24T00:00:00+00:00", today, 3, daily_from) == HISTORY_WEIGHT
    assert weight_for("scheduled__2026-11-25T00:00:00+00:00", today, 3, daily_from) == TOPUP_WEIGHT  # day Nov 24
    assert weight_for("topup__12_2026-11-24", today, 3, daily_from) == TOPUP_WEIGHT
    assert weight_for("manual__2026-11-20T10:11:12+00:00", today, 3, daily_from) == HISTORY_WEIGHT  # as before: old


def test_team_dags_bound_exports_and_serialise_commits(stack):
    from tests.support.runs import team_dag

    stack.new_duckling(1, "fairshape")
    dag = team_dag(1)
    export, register = dag.get_task("export"), dag.get_task("register")
    assert export.pool == "duckling_exports"
    assert register.max_active_tis_per_dag == 1
    assert type(export.weight_rule).__name__ == "RecentDaysFirst"


def _query(stack, sql: str) -> list[tuple]:
    """Read the fair-catch-up Airflow's metadata database."""
    return stack.postgres.query(sql, database="airflow_fair")


def _export_instances(stack) -> list[tuple]:
    """(dag_id, run_id, priority_weight, start, end, state) of every export, in start order."""
    return _query(stack, "SELECT dag_id, run_id, priority_weight, start_date, end_date, state FROM task_instance "
                         "WHERE task_id = 'export' ORDER BY start_date NULLS LAST")


def _successful_runs(stack) -> set[str]:
    return {dag_id for (dag_id,) in _query(stack, "SELECT DISTINCT dag_id FROM dag_run WHERE state = 'success'")}


def _max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.slow
def test_history_does_not_starve_top_ups(stack):
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    ch = ClickHouseHook()
    for team in TOPUP_TEAMS:
        insert_events(ch, team, yesterday, 300 + team)
    history = stack.new_duckling(HISTORY_TEAM, "fairhist", start_date=yesterday - dt.timedelta(days=730))
    topups = [stack.new_duckling(team, "fairtop", start_date=yesterday) for team in TOPUP_TEAMS]
    registry = SESSION_DIR / "fair" / "ducklings.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    write_registry([history, *topups], registry)

    metadata_url = new_metadata_db(stack.postgres, "airflow_fair")
    airflow = make_airflow_stack(SESSION_DIR / "fair" / "home", dict(os.environ), metadata_url, {
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
    }, export_pool_slots=POOL_SLOTS)
    airflow.start()
    topup_dags = {dag_id_for(table, team) for team in TOPUP_TEAMS for table in ("events", "persons")}
    try:
        deadline = time.monotonic() + 420
        rows = []
        while time.monotonic() < deadline:
            rows = _export_instances(stack)
            done = _successful_runs(stack) & topup_dags
            if done == topup_dags:
                break
            time.sleep(3)
        assert done == topup_dags, f"top-ups done: {sorted(done)}\nscheduler:\n{airflow.log_tail('scheduler')}"
    finally:
        airflow.stop()

    history_dags = {dag_id_for(table, HISTORY_TEAM) for table in ("events", "persons")}
    started = [r for r in rows if r[3] is not None]
    # Weights: the two-year catch-up (its batches, which end at the daily-from day, 3 days ago) is history, the
    # other teams' day is a top-up, and so are the history team's own recent days (run ahead of its catch-up by
    # the top-up DAG: run ids topup__…, or scheduled when catch-up got there first) and its one persons run.
    daily_from = yesterday + dt.timedelta(days=1) - dt.timedelta(days=3)
    batches = [r for r in rows if r[0] == dag_id_for("events", HISTORY_TEAM) and r[1].startswith("scheduled__")
               and run_day(r[1]) <= daily_from]
    own_topups = [r for r in rows if r[0] in history_dags and r not in batches]
    assert batches and {r[2] for r in batches} == {HISTORY_WEIGHT}
    assert {r[2] for r in own_topups} <= {TOPUP_WEIGHT}
    assert {r[2] for r in rows if r[0] in topup_dags} == {TOPUP_WEIGHT}
    # Order: every top-up export started among the first exports, ahead of the history queued with them
    # (at most the pool's slots of history could have been running before the top-ups existed; the history
    # team's own top-ups rank with the other teams').
    order = [r[0] for r in started]
    last_topup = max(i for i, dag in enumerate(order) if dag in topup_dags)
    assert last_topup < len(topup_dags) + len(own_topups) + POOL_SLOTS, order[: last_topup + 1]
    assert any(dag in history_dags for dag in order), "history made progress too"
    # The pool bounded ClickHouse's load: never more exports at once than its slots.
    finished = [(r[3], r[4]) for r in started if r[4] is not None]
    assert 0 < _max_overlap(finished) <= POOL_SLOTS
    topup_end = max(r[4] for r in started if r[0] in topup_dags)
    print(f"\nfair catch-up: top-up exports at positions {[i for i, d in enumerate(order) if d in topup_dags]} of "
          f"{len(order)} started; all top-ups done {(topup_end - min(r[3] for r in started)).total_seconds():.0f} s "
          f"after the first export; history exports done by then: "
          f"{sum(1 for r in started if r[0] in history_dags and r[4] and r[4] <= topup_end)}; "
          f"peak concurrent exports {_max_overlap(finished)} (pool {POOL_SLOTS})")
    for duckling in topups:
        assert lake_day_counts(duckling, "events") == {yesterday: 300 + duckling.team_id}
