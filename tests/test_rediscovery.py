"""Rediscovery: a team's earliest date is re-checked on a slow cadence, and older data that appears later
is back-filled (issue 14, point 5).

Airflow's catch-up never goes back: once a DAG has a scheduled run, the next one follows the last, however
early its start date moves (shown below on the stored timetable). So discovery records the uncovered days
and triggers a run for each (``rediscovered__{key}``, no logical date), a few per DAG per pass, until each
has a run. A registry ``start_date`` wins: such a team is never asked.
"""

from __future__ import annotations

import datetime as dt

from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.domain.history import next_month
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry import settings
from airflow_provider_duckling.registry.state import (
    load_discovery_state,
    load_start_dates,
    save_discovery_state,
)
from airflow_provider_duckling.scheduling.airflow_env import load_dags
from airflow_provider_duckling.scheduling.dag_factory import DISCOVERY_DAG_ID, dag_id_for
from tests.support.runs import logged_text

TEAM, PINNED = 245, 246


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _scheduled_runs(dag_id: str, days: list[dt.date]) -> None:
    """Successful scheduled runs of ``days``, as catch-up leaves them (what makes the next run follow them)."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    with create_session() as session:
        dag = SerializedDagModel.get_dag(dag_id, session=session)
        for day in days:
            start = _midnight(day)
            dag.create_dagrun(
                run_id=f"scheduled__{(start + dt.timedelta(days=1)).isoformat()}", logical_date=start,
                data_interval=(start, start + dt.timedelta(days=1)), run_after=start + dt.timedelta(days=1), conf={},
                run_type=DagRunType.SCHEDULED, triggered_by=DagRunTriggeredByType.TEST, state=DagRunState.SUCCESS,
                session=session,
            )


def _runs(dag_id: str, prefix: str) -> list[tuple[str, object, dict]]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return sorted((r.run_id, r.logical_date, r.conf) for r in session.query(DagRun).filter(
            DagRun.dag_id == dag_id, DagRun.run_id.like(f"{prefix}%")))


def _a_week_passes() -> None:
    """Age every remembered check by the rediscovery cadence, as if a week had passed."""
    state = load_discovery_state()
    for days in state.checked.values():
        for team in days:
            days[team] -= dt.timedelta(days=settings.rediscovery_days())
    save_discovery_state(state)


def test_older_data_that_appears_later_moves_the_start_and_is_back_filled(stack, monkeypatch, caplog, capfd):
    monkeypatch.setenv("AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "0")  # store each parse at once
    ch = ClickHouseHook()
    today = dt.datetime.now(dt.UTC).date()
    old = today - dt.timedelta(days=20)  # the late import's first day
    known = old + dt.timedelta(days=3)  # where the history started when discovery first looked
    insert_events(ch, TEAM, known, 9, days=3)
    insert_events(ch, PINNED, known, 4, days=3)
    team = stack.new_duckling(TEAM, "redisc", start_date=None)
    pinned = stack.new_duckling(PINNED, "redisc", start_date=known)
    stack.use(team, pinned)
    state = settings.state_path()
    if state.exists():
        state.unlink()

    bag = load_dags()
    assert bag.get_dag(DISCOVERY_DAG_ID).test().state == "success"
    assert load_start_dates()["events"] == {TEAM: known}
    assert load_discovery_state().checked["events"] == {TEAM: today}
    events = dag_id_for("events", TEAM)
    load_dags()
    _scheduled_runs(events, [known + dt.timedelta(days=n) for n in range(3)])  # catch-up has run those days

    insert_events(ch, TEAM, old, 7, days=2)  # older data appears: two days of it, then a day without any
    insert_events(ch, PINNED, old, 5)
    bag = load_dags()
    assert bag.get_dag(DISCOVERY_DAG_ID).test().state == "success"  # checked today: not due, nothing asked
    assert load_start_dates()["events"] == {TEAM: known}

    _a_week_passes()
    assert bag.get_dag(DISCOVERY_DAG_ID).test().state == "success"
    found = load_discovery_state()
    assert found.start_dates["events"] == {TEAM: old}  # the registry's start_date wins for PINNED: never asked
    moved = [line for line in logged_text(caplog, capfd).splitlines() if "event=start_date_moved_earlier" in line]
    assert any(f"event=start_date_moved_earlier table=events team={TEAM} old={known} new={old}" in line
               for line in moved), moved
    assert not [line for line in moved if f"team={PINNED} " in line]
    # The uncovered days as batches (a calendar month of them per run, as catch-up moves history), keyed by
    # their range, with no logical date (see discovery's docstring).
    chunks, day = [], old
    while day < known:
        end = min(next_month(day), known)
        last = end - dt.timedelta(days=1)
        chunks.append((day, last))
        day = end
    assert [(r, d, c) for r, d, c in _runs(events, "rediscovered__")] == [
        (f"rediscovered__{TEAM}_{a}" + (f"_to_{b}" if b > a else ""), None,
         {"partition_key": f"{TEAM}_{a}" + (f"..{b}" if b > a else "")}) for a, b in chunks]
    assert found.backfill == {"events": {TEAM: (old, known)}}  # confirmed when the runs are seen next pass

    # The next parse starts the DAG at the new date; the scheduler's catch-up alone would still go on from
    # the last scheduled run (never back), which is why the runs above are triggered.
    bag = load_dags()
    dag = bag.get_dag(events)
    assert dag.start_date == _midnight(old)
    assert bag.get_dag(dag_id_for("events", PINNED)).start_date == _midnight(known)
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        assert session.get(DagModel, events).next_dagrun == _midnight(known + dt.timedelta(days=3))

    # The next pass sees the runs, clears the range, and triggers nothing twice.
    assert bag.get_dag(DISCOVERY_DAG_ID).test().state == "success"
    assert load_discovery_state().backfill == {}
    assert len(_runs(events, "rediscovered__")) == len(chunks)
    assert _runs(dag_id_for("persons", TEAM), "rediscovered__") == []  # persons history is the full export

    # Each triggered run moves its day: run the first as the scheduler would (its conf, no logical date).
    from airflow_provider_duckling.demo.report import lake_day_counts

    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", str(7 * 24 * 60))  # an old day never waits
    first_key = _runs(events, "rediscovered__")[0][2]["partition_key"]
    run = dag.test(logical_date=None, run_conf={"partition_key": first_key})
    assert run.state == "success"
    assert lake_day_counts(team, "events") == {d: 7 for d in (old, old + dt.timedelta(days=1)) if d <= chunks[0][1]}
