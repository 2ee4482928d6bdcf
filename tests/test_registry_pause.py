"""A durable per-team pause in the registry (issue 14, point 4).

``paused: true`` keeps the team's DAGs listed (and triggerable by hand: an operator triggering a day means
it) but scheduling nothing; top-ups, the later pass, discovery and maintenance skip the team; Airflow's own
pause toggle is untouched. Ending the pause resumes catch-up from the last scheduled run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry import settings
from airflow_provider_duckling.registry.state import load_start_dates, remember_start_dates
from airflow_provider_duckling.scheduling.airflow_env import load_dags, run_day
from airflow_provider_duckling.scheduling.dag_factory import (
    DISCOVERY_DAG_ID,
    MAINTENANCE_DAG_ID,
    RETRY_DAG_ID,
    TOPUP_DAG_ID,
    dag_id_for,
)
from tests.support.runs import failed_scheduled_run
from tests.support.stack import DAYS

PAUSED, ACTIVE, PAUSED_NEW = 241, 242, 243


def _dag_model(dag_id: str):
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        model = session.get(DagModel, dag_id)
        session.expunge(model)
        return model


def _runs(dag_id: str, prefix: str) -> list[str]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return sorted(r.run_id for r in session.query(DagRun).filter(DagRun.dag_id == dag_id,
                                                                     DagRun.run_id.like(f"{prefix}%")))


def _stored_timetable(dag_id: str):
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return SerializedDagModel.get_dag(dag_id, session=session).timetable


def _restriction(dag):
    from airflow.timetables.base import TimeRestriction

    return TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)


def test_a_paused_team_keeps_its_dags_schedules_nothing_and_is_skipped_by_housekeeping(stack, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "0")
    ch = ClickHouseHook()
    today = dt.datetime.now(dt.UTC).date()
    manual_day = today - dt.timedelta(days=10)
    insert_events(ch, PAUSED, manual_day, 11)
    insert_events(ch, PAUSED_NEW, DAYS[0], 5)
    failed_day = today - dt.timedelta(days=5)  # inside the later pass's look-back, before the top-up days
    recent = today - dt.timedelta(days=30)
    paused = replace(stack.new_duckling(PAUSED, "pause", start_date=recent), paused=True)
    active = stack.new_duckling(ACTIVE, "pause", start_date=recent)
    paused_new = replace(stack.new_duckling(PAUSED_NEW, "pause", start_date=None), paused=True)
    stack.use(paused, active, paused_new)
    state = settings.state_path()
    if state.exists():
        state.unlink()

    bag = load_dags()
    assert not bag.import_errors, bag.import_errors
    for table in ("events", "persons"):
        dag = bag.get_dag(dag_id_for(table, PAUSED))  # listed: the UI shows it, a person can trigger it
        assert dag.timetable.paused is True and "paused in the registry" in dag.timetable.summary, table
        assert dag.timetable.next_dagrun_info(last_automated_data_interval=None, restriction=_restriction(dag)) is None
        assert "paused" in dag.tags and "paused in the registry" in dag.description
        assert dag.start_date == dt.datetime.combine(recent, dt.time(), tzinfo=dt.UTC)  # kept for the resume
        assert _stored_timetable(dag.dag_id).paused is True  # what the scheduler decodes
        model = _dag_model(dag.dag_id)
        assert model.is_paused is False  # Airflow's own toggle is not what the registry pause uses
        assert model.next_dagrun is None and model.next_dagrun_create_after is None  # schedules nothing
        live = bag.get_dag(dag_id_for(table, ACTIVE))
        assert live.timetable.paused is False and "paused" not in live.tags
        assert live.timetable.next_dagrun_info(last_automated_data_interval=None, restriction=_restriction(live))
        assert _dag_model(live.dag_id).next_dagrun is not None

    # Maintenance: one mapped task per duckling, none for the paused teams; called directly, it skips them.
    maintenance = bag.get_dag(MAINTENANCE_DAG_ID)
    assert maintenance.get_task("maintain").op_kwargs_expand_input.value["team_id"] == [ACTIVE]
    from airflow_provider_duckling.transfer.maintenance import run_maintenance

    report = run_maintenance(PAUSED, dry_run=False, snapshot_retention=dt.timedelta(0), orphan_retention=dt.timedelta(days=1))
    assert report["skipped"] == "paused in the registry" and report["files_before"] == 0

    # Top-ups: the active team's recent days get runs, the paused team's none.
    assert bag.get_dag(TOPUP_DAG_ID).test().state == "success"
    assert _runs(dag_id_for("events", ACTIVE), "topup__")
    assert _runs(dag_id_for("events", PAUSED), "topup__") == []
    # The later pass: a failed scheduled run of each team; only the active one is re-run.
    for team in (PAUSED, ACTIVE):
        failed_scheduled_run(dag_id_for("events", team), failed_day)
    assert bag.get_dag(RETRY_DAG_ID).test().state == "success"
    assert _runs(dag_id_for("events", ACTIVE), "later_pass__") == [f"later_pass__{ACTIVE}_{failed_day}"]
    assert _runs(dag_id_for("events", PAUSED), "later_pass__") == []
    # Discovery: the paused new team is not asked about (it has events), so it stays without a start.
    assert bag.get_dag(DISCOVERY_DAG_ID).test().state == "success"
    found = load_start_dates()
    assert PAUSED_NEW not in found.get("events", {}) and PAUSED_NEW not in found.get("persons", {})

    # A manual run of a paused team's day runs (the registry pause stops the schedule, not a person).
    manual = run_day(bag.get_dag(dag_id_for("events", PAUSED)), manual_day)  # its day's interval, as unpaused
    assert manual.state == "success"
    assert {ti.task_id: ti.state for ti in manual.get_task_instances()} == dict.fromkeys(
        ("wait_for_late_events", "export", "register"), "success")
    assert lake_day_counts(paused, "events") == {manual_day: 11}


def test_ending_the_pause_resumes_catch_up_from_the_last_scheduled_run(stack, monkeypatch):
    """The pause skipped days; unpaused, the DAG's next scheduled run is the day after its last one, so
    catch-up back-fills every day the pause skipped."""
    monkeypatch.setenv("AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "0")  # store each parse at once
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    start = DAYS[0]
    duckling = replace(stack.new_duckling(244, "resume", start_date=start), paused=True)
    stack.use(duckling)
    remember_start_dates({})
    bag = load_dags()
    assert bag.get_dag(dag_id_for("events", 244)).timetable.paused is True
    stack.use(replace(duckling, paused=False))
    dag = load_dags().get_dag(dag_id_for("events", 244))
    timetable = _stored_timetable(dag.dag_id)  # what the scheduler works with
    assert timetable.paused is False and coerce_to_core_timetable(dag.timetable).serialize() == timetable.serialize()
    last = DataInterval(dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC),
                        dt.datetime.combine(start + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
    info = timetable.next_dagrun_info(last_automated_data_interval=last,
                                      restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True))
    assert info.data_interval.start == last.end  # the first day the pause skipped, not today
