"""How the DAGs come and stay: start-date discovery, new ducklings, the settle delay, and a broken
registry that must not make DAGs disappear."""

from __future__ import annotations

import datetime as dt
import json

from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry import settings
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.registry.state import load_start_dates
from airflow_provider_duckling.scheduling.airflow_env import load_dags
from airflow_provider_duckling.scheduling.dag_factory import DISCOVERY_DAG_ID, HEALTH_DAG_ID, build_team_dag
from tests.support.runs import failed_scheduled_run
from tests.support.stack import DAYS


def _dag_model(dag_id: str):
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        model = session.get(DagModel, dag_id)
        session.expunge(model)
        return model


def test_discovery_finds_earliest_dates_and_new_ducklings_catch_up(stack):
    ch = ClickHouseHook()
    # Team 6: a pre-1970 event (ignored), one in 1975 (clamped to the floor), then regular data.
    insert_events(ch, 6, dt.date(1969, 12, 31), 3)
    insert_events(ch, 6, dt.date(1975, 6, 1), 2)
    new = [stack.new_duckling(t, "disc", start_date=None) for t in (1, 6, 77)]
    stack.use(*new)
    state = settings.state_path()
    if state.exists():
        state.unlink()

    now_before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    bag = load_dags()
    before = bag.get_dag("duckling_events_backfill_team_1")
    assert before.schedule is None  # exists, but schedules nothing until its start is known

    assert bag.get_dag(DISCOVERY_DAG_ID).test().state == "success"
    found = load_start_dates()
    assert found["events"] == {1: DAYS[0], 6: settings.start_date_floor()}
    assert 77 not in found.get("events", {})
    # Persons start at the last closed day when discovery first sees the duckling (data or not): their history
    # is the full export that the first run writes.
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert found["persons"] == {1: yesterday, 6: yesterday, 77: yesterday}

    bag = load_dags()  # the next parse
    dag = bag.get_dag("duckling_events_backfill_team_1")
    assert dag.start_date == dt.datetime.combine(DAYS[0], dt.time(), tzinfo=dt.UTC)
    from airflow.timetables.interval import CronDataIntervalTimetable

    from airflow_provider_duckling.domain.history import batch_end
    from airflow_provider_duckling.registry.state import load_discovery_state

    # Discovery also records when it first saw each duckling: history before 3 days before it moves in batches.
    seen = load_discovery_state().first_seen
    assert set(seen) == {1, 6, 77} and all(now_before <= t <= dt.datetime.now(dt.UTC) for t in seen.values())
    daily_from = seen[1].date() - dt.timedelta(days=3)
    assert isinstance(dag.timetable, CronDataIntervalTimetable) and dag.timetable.daily_from == daily_from
    assert bag.get_dag("duckling_persons_backfill_team_1").timetable.daily_from == seen[1].date()
    model = _dag_model("duckling_events_backfill_team_1")
    assert model.is_paused is False
    assert model.next_dagrun_data_interval_start == dt.datetime.combine(DAYS[0], dt.time(), tzinfo=dt.UTC)
    end = batch_end(DAYS[0], daily_from, "month", settings.history_batch_months())  # the rest of its quarter
    assert model.next_dagrun_data_interval_end == dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)
    assert bag.get_dag("duckling_events_backfill_team_77").schedule is None
    # Re-running discovery changes nothing that is known, and never asks again for known teams.
    assert bag.get_dag(DISCOVERY_DAG_ID).test().state == "success"
    assert load_start_dates()["events"] == found["events"]


def test_a_registry_entry_is_all_a_new_duckling_needs(stack):
    first = stack.new_duckling(2, "newbie")
    stack.use(first)
    assert "duckling_events_backfill_team_3" not in load_dags().dag_ids
    stack.new_duckling(3, "newbie")  # one step: the registry entry
    bag = load_dags()
    for table in ("events", "persons"):
        dag_id = f"duckling_{table}_backfill_team_3"
        assert dag_id in bag.dag_ids
        assert _dag_model(dag_id).is_paused is False
        assert bag.get_dag(dag_id).catchup is True
    # Persons run one at a time: a full export never lands after a top-up of a day it did not read.
    assert [bag.get_dag(f"duckling_{t}_backfill_team_3").max_active_runs for t in ("events", "persons")] == [4, 1]


def test_registry_outage_keeps_the_last_good_dags_and_reports_it(stack):
    stack.use(stack.new_duckling(2, "outage"))
    good = set(load_dags().dag_ids)
    assert "duckling_events_backfill_team_2" in good
    assert load_dags().get_dag(HEALTH_DAG_ID).test().state == "success"
    saved = stack.registry.read_text()
    try:
        stack.registry.write_text("ducklings: [ {team_id: 2, bucket: ")  # a half-written file
        bag = load_dags()
        assert not bag.import_errors
        assert set(bag.dag_ids) == good
        assert bag.get_dag(HEALTH_DAG_ID).test().state == "failed"
        assert "cannot read duckling registry" in bag.get_dag(HEALTH_DAG_ID).doc_md

        stack.registry.write_text(saved)
        settings.state_path().write_text("{not json")  # the remembered dates break instead
        bag = load_dags()
        assert set(bag.dag_ids) == good
        assert "cannot read remembered start dates" in bag.get_dag(HEALTH_DAG_ID).doc_md
    finally:
        stack.registry.write_text(saved)
        settings.state_path().write_text(json.dumps({"start_dates": {}}))
    assert load_dags().get_dag(HEALTH_DAG_ID).test().state == "success"


def test_top_up_waits_for_the_day_to_close_plus_the_settle_delay(monkeypatch):
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "90")
    duckling = Duckling(9, "settle-t9", "us-east-1", "127.0.0.1", "x", "arn:aws:iam::123456789012:role/x", "ext-id")
    dag = build_team_dag(duckling, "events", DAYS[0])
    sensor = dag.get_task("wait_for_late_events")
    assert sensor.delta == dt.timedelta(minutes=90) and sensor.mode == "reschedule"
    now = dt.datetime.now(dt.UTC)
    assert sensor.poke({"data_interval_end": now - dt.timedelta(minutes=30)}) is False  # day closed, not settled
    assert sensor.poke({"data_interval_end": now - dt.timedelta(minutes=91)}) is True
    # A day not over is the export's to refuse, at once and in one line: the sensor does not hold it till then.
    assert sensor.poke({"data_interval_end": now + dt.timedelta(hours=5)}) is True


def test_later_pass_reruns_each_failed_partition_once(stack):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from airflow_provider_duckling.scheduling.dag_factory import RETRY_DAG_ID

    duckling = stack.new_duckling(2, "laterpass", start_date=DAYS[0])
    stack.use(duckling)
    bag = load_dags()
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    failed_scheduled_run("duckling_events_backfill_team_2", yesterday)

    for _ in range(2):  # the second pass finds the same failure and does not trigger it again
        assert bag.get_dag(RETRY_DAG_ID).test().state == "success"
    with create_session() as session:
        reruns = session.query(DagRun).filter(DagRun.dag_id == "duckling_events_backfill_team_2",
                                              DagRun.run_id.like("later_pass__%")).all()
        assert [(r.run_id, r.conf) for r in reruns] == [
            (f"later_pass__2_{yesterday}", {"partition_key": f"2_{yesterday}"})
        ]
        assert session.query(DagRun).filter(DagRun.dag_id == "duckling_persons_backfill_team_2",
                                            DagRun.run_id.like("later_pass__%")).count() == 0

    # A failed history batch (the days before the daily-from day) is run again whole, by its range key.
    first, end = yesterday - dt.timedelta(days=6), yesterday - dt.timedelta(days=2)
    failed_scheduled_run("duckling_persons_backfill_team_2", first, end)
    assert bag.get_dag(RETRY_DAG_ID).test().state == "success"
    key = f"2_{first}..{end - dt.timedelta(days=1)}"
    with create_session() as session:
        reruns = session.query(DagRun).filter(DagRun.dag_id == "duckling_persons_backfill_team_2",
                                              DagRun.run_id.like("later_pass__%")).all()
        assert [(r.run_id, r.conf) for r in reruns] == [(f"later_pass__{key.replace('..', '_to_')}",
                                                         {"partition_key": key})]
