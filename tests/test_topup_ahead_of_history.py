"""A new team's daily top-up does not wait for its own history (issue 12, point 4; issue 21).

Through a real scheduler, dag-processor, api-server and LocalExecutor: a duckling registered with 50 days
of history has yesterday in its lake within the first minutes: ``duckling_topup_recent_days`` runs the last
closed days as runs of their own, which catch-up then skips — or, its history being one batch now, catch-up
reaches them first; either way each day runs once. A second, shorter history shows catch-up skipping the top-up days
and going on to today (no stall, no day run twice). A paused DAG gets no top-up. The same run checks
issue 12 point 7 against the real dag-processor: every DAG keeps one version while it re-parses.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
from airflow_provider_duckling.domain.history import batch_end, catchup_runs
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry.catalog import write_registry
from airflow_provider_duckling.registry.settings import history_batch_months
from airflow_provider_duckling.scheduling.dag_factory import dag_id_for
from airflow_provider_duckling.scheduling.priority import HISTORY_WEIGHT, TOPUP_WEIGHT, run_day
from tests.conftest import SESSION_DIR
from tests.support.airflow_stack import make_airflow_stack, new_metadata_db

LONG, SHORT = 141, 142  # 50 days of history; 8 days (team ids no other test uses: ClickHouse is shared)
LONG_DAYS, SHORT_DAYS, TOPUP_DAYS = 50, 8, 3
DB = "airflow_topup"


def _query(stack: Any, sql: str, *args: Any) -> list[tuple]:
    """Read this test's Airflow metadata database."""
    return stack.postgres.query(sql, *args, database=DB)


def _runs(stack: Any, dag_id: str) -> list[tuple]:
    """(run_id, run_type, state, logical_date, data_interval_start, data_interval_end, conf) by logical date."""
    return _query(stack, "SELECT run_id, run_type, state, logical_date, data_interval_start, data_interval_end, conf "
                         "FROM dag_run WHERE dag_id = %s ORDER BY logical_date", dag_id)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


@pytest.mark.slow
def test_new_teams_top_up_lands_ahead_of_its_history(stack: Any) -> None:
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    recent = [yesterday - dt.timedelta(days=n) for n in range(TOPUP_DAYS)]
    ch = ClickHouseHook()
    insert_events(ch, LONG, yesterday - dt.timedelta(days=LONG_DAYS - 1), 20, days=LONG_DAYS)
    insert_events(ch, LONG, yesterday, 141)
    insert_events(ch, SHORT, yesterday - dt.timedelta(days=SHORT_DAYS - 1), 30, days=SHORT_DAYS)
    long = stack.new_duckling(LONG, "topup", start_date=yesterday - dt.timedelta(days=LONG_DAYS - 1))
    short = stack.new_duckling(SHORT, "topup", start_date=yesterday - dt.timedelta(days=SHORT_DAYS - 1))
    registry = SESSION_DIR / "topup" / "ducklings.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    write_registry([long, short], registry)

    airflow = make_airflow_stack(SESSION_DIR / "topup" / "home", dict(os.environ), new_metadata_db(stack.postgres, DB), {
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__STATE_PATH": str(registry.with_name("state.json")),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
        "AIRFLOW__DUCKLING__TOPUP_DAYS": str(TOPUP_DAYS),
    })
    # The persons DAGs paused before anything runs: they must get no top-up (and leave the 2 cores to events).
    paused = [dag_id_for("persons", team) for team in (LONG, SHORT)]
    pause = ("dags", "pause", "--treat-dag-id-as-regex", "-y", "^(" + "|".join(paused) + ")$")
    for args in (("dags", "reserialize"), pause):
        result = airflow.airflow(*args)
        assert result.returncode == 0, result.stderr[-2000:]

    long_events, short_dags = dag_id_for("events", LONG), [dag_id_for("events", SHORT)]
    started = time.monotonic()
    airflow.start(api_first=True)
    try:
        # 1. Yesterday reaches the long history's lake within the first minutes: through its top-up, or through
        #    catch-up when that got there first (its history is one batch and the top-up days: a race), once.
        def yesterdays_run() -> tuple[str, str] | None:
            return next(((r[0], r[2]) for r in _runs(stack, long_events)
                         if (r[4], r[5]) == (_midnight(yesterday), _midnight(today)) and r[2] in ("success", "failed")),
                        None)

        deadline, found = time.monotonic() + 180, None
        while time.monotonic() < deadline and found is None:
            found = yesterdays_run()
            time.sleep(2)
        landed = time.monotonic() - started
        assert found and found[1] == "success", f"{found}\nscheduler:\n{airflow.log_tail('scheduler')}"
        assert found[0] in (f"topup__{LONG}_{yesterday}", f"scheduled__{_midnight(today).isoformat()}"), found
        assert lake_day_counts(long, "events").get(yesterday) == clickhouse_day_counts(ch, LONG)[yesterday] == 161
        print(f"\nyesterday in the lake {landed:.0f} s after start, by run {found[0]}")

        # 2. Catch-up of the short history (one batch of its older days, then the top-up days) skips the
        #    top-up days and goes on to today: each day is in exactly one run.
        short_start = yesterday - dt.timedelta(days=SHORT_DAYS - 1)
        months = history_batch_months()
        short_runs = catchup_runs(short_start, today, today - dt.timedelta(days=TOPUP_DAYS), "month", months)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            done = all(len(runs := _runs(stack, d)) == short_runs and all(r[2] == "success" for r in runs)
                       for d in short_dags)
            next_runs = {d: n for d, n in _query(stack, "SELECT dag_id, next_dagrun FROM dag WHERE dag_id = ANY(%s)",
                                                     short_dags)}
            if done and all(n == _midnight(today) for n in next_runs.values()):
                break
            time.sleep(3)
        for dag_id in short_dags:
            runs = _runs(stack, dag_id)
            intervals = [(r[4].date(), r[5].date()) for r in runs]
            assert intervals[0][0] == short_start and intervals[-1][1] == today, intervals
            assert all(a[1] == b[0] for a, b in zip(intervals, intervals[1:], strict=False)), intervals
            assert [end for _, end in intervals] == [batch_end(start, today - dt.timedelta(days=TOPUP_DAYS), "month", months)
                                                     for start, _ in intervals], intervals
            assert intervals[-TOPUP_DAYS:] == [(d, d + dt.timedelta(days=1)) for d in sorted(recent)], intervals
            assert all(r[2] == "success" for r in runs), runs
        assert next_runs == dict.fromkeys(short_dags, _midnight(today)), next_runs  # caught up, not stalled
        # Whether a recent day ran as a top-up or as catch-up is a race (a 5-day batch is quick); either way once.
        short_topups = [r for d in short_dags for r in _runs(stack, d) if r[0].startswith("topup__")]
        export_weights = _query(stack, "SELECT dag_id, run_id, priority_weight FROM task_instance "
                                       "WHERE task_id = 'export' AND dag_id = ANY(%s)", [long_events, *short_dags])
    finally:
        airflow.stop()
    wall = time.monotonic() - started

    # 3. The top-ups: one run per recent day catch-up had not reached, logical date = the day, data interval =
    #    that day, its key; with the batches, every day of the history in exactly one run.
    topups = [r for r in _runs(stack, long_events) if r[0].startswith("topup__")]
    assert [(r[0], r[3], r[4], r[5], r[6]) for r in topups] == [
        (f"topup__{LONG}_{d}", _midnight(d), _midnight(d), _midnight(d + dt.timedelta(days=1)),
         {"partition_key": f"{LONG}_{d}"}) for d in sorted(recent) if f"topup__{LONG}_{d}" in [r[0] for r in topups]]
    long_intervals = [(r[4].date(), r[5].date()) for r in _runs(stack, long_events)]
    assert long_intervals[0][0] == yesterday - dt.timedelta(days=LONG_DAYS - 1) and long_intervals[-1][1] <= today
    assert all(a[1] == b[0] for a, b in zip(long_intervals, long_intervals[1:], strict=False)), long_intervals
    assert lake_day_counts(short, "events") == clickhouse_day_counts(ch, SHORT)
    assert not [r for d in paused for r in _runs(stack, d) if r[0].startswith("topup__")], "a paused DAG got a top-up"
    # 4. Priority: top-up exports outrank history exports (the strategy applies through the real scheduler).
    weights = {(d, run_id): w for d, run_id, w in export_weights}
    assert {w for (d, run_id), w in weights.items() if run_id.startswith("topup__")} <= {TOPUP_WEIGHT}
    daily_from = today - dt.timedelta(days=TOPUP_DAYS)  # the batches end there; the runs named by it or before are history
    scheduled = {run_id: w for (d, run_id), w in weights.items() if d == long_events and run_id.startswith("scheduled__")}
    history = [w for run_id, w in scheduled.items() if run_day(run_id) <= daily_from]
    assert history and set(history) == {HISTORY_WEIGHT}, scheduled  # the last batch too, though it ends 3 days ago
    assert {w for run_id, w in scheduled.items() if run_day(run_id) > daily_from} <= {TOPUP_WEIGHT}, scheduled
    # 5. Issue 12 point 7: the dag-processor re-parsed the file every few seconds while runs had task
    #    instances, and no DAG got a second version.
    versions = dict(_query(stack, "SELECT dag_id, count(*) FROM dag_version GROUP BY dag_id"))
    assert versions and set(versions.values()) == {1}, versions
    print(f"short history caught up to today with {len(short_topups)} top-up runs; wall {wall:.0f} s")
