"""Issue 14, points 3, 4 and 5 through a real scheduler, dag-processor, api-server and LocalExecutor.

* Settle (point 3): with a settle delay that outlasts the test, catch-up runs of older days pass their wait
  at once, the scheduled run of the day that has just ended waits, and a repair triggered with
  ``airflow dags trigger`` (no logical date, the partition in conf) of an old day runs at once.
* Pause (point 4): a team paused in the registry gets no scheduled run, while Airflow's own toggle stays on.
* Rediscovery (point 5): older data loaded after the team's start was discovered is found when the start is
  re-checked, and its days are back-filled by the runs discovery triggers (catch-up had passed them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
from airflow_provider_duckling.domain.history import next_month
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry.catalog import write_registry
from airflow_provider_duckling.registry.state import (
    DiscoveryState,
    load_discovery_state,
    save_discovery_state,
)
from airflow_provider_duckling.scheduling.dag_factory import DISCOVERY_DAG_ID, dag_id_for
from tests.conftest import SESSION_DIR
from tests.support.airflow_stack import make_airflow_stack, new_metadata_db

TEAM, PAUSED = 251, 252
DB = "airflow_ops14"


def _query(stack: Any, sql: str, *args: Any) -> list[tuple]:
    return stack.postgres.query(sql, *args, database=DB)


def _runs(stack: Any, dag_id: str) -> dict[str, tuple]:
    """run_id → (run_type, state, logical_date, conf)."""
    return {r[0]: r[1:] for r in _query(stack, "SELECT run_id, run_type, state, logical_date, conf FROM dag_run "
                                               "WHERE dag_id = %s", dag_id)}


def _task_state(stack: Any, dag_id: str, run_id: str, task_id: str) -> str | None:
    rows = _query(stack, "SELECT state FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s",
                  dag_id, run_id, task_id)
    return rows[0][0] if rows else None


def _wait(what: str, check, airflow: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(3)
    raise AssertionError(f"{what}: not reached\nscheduler:\n{airflow.log_tail('scheduler')}")


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


@pytest.mark.slow
def test_settle_pause_and_rediscovery_through_a_real_scheduler(stack: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    yesterday = today - dt.timedelta(days=1)
    known = today - dt.timedelta(days=5)  # where discovery found the history starting
    old = today - dt.timedelta(days=8)  # older data, loaded since: two days with data, then one without
    history = [known + dt.timedelta(days=n) for n in range(5)]  # known … yesterday
    ch = ClickHouseHook()
    insert_events(ch, TEAM, known, 6, days=5)
    insert_events(ch, TEAM, old, 8, days=2)
    insert_events(ch, PAUSED, known, 3, days=5)
    team = stack.new_duckling(TEAM, "ops14", start_date=None)
    from dataclasses import replace

    paused = replace(stack.new_duckling(PAUSED, "ops14", start_date=known), paused=True)
    registry = SESSION_DIR / "ops14" / "ducklings.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    write_registry([team, paused], registry)
    state_path = registry.with_name("state.json")
    # Discovery found the start a few days ago (checked today: not due yet); persons start yesterday.
    # First seen when it found that start: every day since is a run of its own (no history batch).
    save_discovery_state(DiscoveryState(start_dates={"events": {TEAM: known}, "persons": {TEAM: yesterday}},
                                        checked={"events": {TEAM: today}},
                                        first_seen={TEAM: _midnight(known), PAUSED: _midnight(known)}), state_path)
    # A settle delay that holds yesterday (ended at 00:00 today) past the test, and no older day.
    settle_minutes = int((now - _midnight(today)).total_seconds() // 60) + 12 * 60

    airflow = make_airflow_stack(SESSION_DIR / "ops14" / "home", dict(os.environ), new_metadata_db(stack.postgres, DB), {
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__STATE_PATH": str(state_path),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": str(settle_minutes),
        "AIRFLOW__DUCKLING__TOPUP_DAYS": "0",
    })
    quiet = ("dags", "pause", "--treat-dag-id-as-regex", "-y", "^(duckling_persons_.*|duckling_maintenance|"
             "duckling_retry_failed_partitions|duckling_topup_recent_days|duckling_registry_health)$")
    for args in (("dags", "reserialize"), quiet):
        result = airflow.airflow(*args)
        assert result.returncode == 0, result.stderr[-2000:]

    events, paused_events = dag_id_for("events", TEAM), dag_id_for("events", PAUSED)
    started = time.monotonic()
    airflow.start(api_first=True)
    try:
        # 1. Catch-up: every day but yesterday succeeds; yesterday's run waits in its settle sensor.
        scheduled = {f"scheduled__{_midnight(d + dt.timedelta(days=1)).isoformat()}": d for d in history}
        last = next(r for r, d in scheduled.items() if d == yesterday)

        def caught_up() -> bool:
            runs = _runs(stack, events)
            older = [r for r, d in scheduled.items() if d != yesterday]
            return (all(runs.get(r, (None, None))[1] == "success" for r in older)
                    and _task_state(stack, events, last, "wait_for_late_events") == "up_for_reschedule")

        _wait("catch-up of the settled days", caught_up, airflow)
        assert _runs(stack, events)[last][1] == "running"

        # 2. A repair of an old day, as `airflow dags trigger` makes it: no logical date, runs at once.
        repair = f"manual__repair_{TEAM}_{history[1]}"
        result = airflow.airflow("dags", "trigger", events, "--run-id", repair,
                                 "--conf", json.dumps({"partition_key": f"{TEAM}_{history[1]}"}))
        assert result.returncode == 0, result.stderr[-2000:]
        _wait("the repair run", lambda: _runs(stack, events).get(repair, (None, None))[1] in ("success", "failed"),
              airflow)
        assert _runs(stack, events)[repair][1:] == ("success", None, {"partition_key": f"{TEAM}_{history[1]}"})

        # 3. A week passes (the check is due) and discovery runs: the start moves to `old`, and the three
        #    days before the known start get runs (a month of them per run), which back-fill them.
        state = load_discovery_state(state_path)
        state.checked["events"][TEAM] = today - dt.timedelta(days=7)
        save_discovery_state(state, state_path)
        result = airflow.airflow("dags", "trigger", DISCOVERY_DAG_ID, "--run-id", "manual__rediscover")
        assert result.returncode == 0, result.stderr[-2000:]
        keys, day = [], old  # the three days as batches: a calendar month of them per run
        while day < known:
            end = min(next_month(day), known)
            last_day = end - dt.timedelta(days=1)
            keys.append(f"{TEAM}_{day}" + (f"..{last_day}" if last_day > day else ""))
            day = end
        rediscovered = {f"rediscovered__{key.replace('..', '_to_')}": key for key in keys}
        _wait("the rediscovered days' runs", lambda: all(
            _runs(stack, events).get(r, (None, None))[1] == "success" for r in rediscovered), airflow)
        runs = _runs(stack, events)
        next_run = _query(stack, "SELECT next_dagrun, is_paused FROM dag WHERE dag_id = %s", events)[0]
        paused_row = _query(stack, "SELECT next_dagrun, is_paused FROM dag WHERE dag_id = %s", paused_events)[0]
        paused_runs = _runs(stack, paused_events)
        yesterday_wait = _task_state(stack, events, last, "wait_for_late_events")
    finally:
        airflow.stop()
    wall = time.monotonic() - started

    assert load_discovery_state(state_path).start_dates["events"][TEAM] == old
    assert "event=start_date_moved_earlier table=events team=251" in "".join(
        p.read_text(errors="replace") for p in (SESSION_DIR / "ops14" / "home" / "logs").rglob("*.log")
        if DISCOVERY_DAG_ID in str(p))
    assert all(runs[r][1:] == ("success", None, {"partition_key": key}) for r, key in rediscovered.items())
    assert sorted(r for r in runs if r.startswith("rediscovered__")) == sorted(rediscovered)  # nothing more
    # Catch-up never went back: no scheduled run before the known start, and it goes on from today.
    assert sorted(v[2] for v in runs.values() if v[0] == "scheduled") == [_midnight(d) for d in history]
    assert next_run == (_midnight(today), False)
    assert yesterday_wait == "up_for_reschedule"  # still waiting: only the day that has just ended waits
    expected = {d: n for d, n in clickhouse_day_counts(ch, TEAM).items() if d != yesterday}
    assert lake_day_counts(team, "events") == expected and len(expected) == 6  # old, old+1, known … today-2
    # The paused team: listed and on in Airflow, but nothing scheduled.
    assert paused_row == (None, False) and paused_runs == {}
    print(f"\nreal scheduler: catch-up, repair and 3 rediscovered days in {wall:.0f} s")
