"""Manual and repair runs start at once; only the day that has just ended waits (issue 14, point 3).

The settle wait is measured from the end of the day the run moves (its ``partition_key``, else its data
interval, else the day before it was created), not from when a run without a data interval was created —
which is what Airflow's ``TimeDeltaSensor`` did for every UI, CLI, ``duckling run`` and later-pass trigger.
A week-long settle delay makes "waits" and "starts at once" unambiguous whatever the clock says.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.scheduling.dag_factory import build_team_dag
from airflow_provider_duckling.scheduling.settle import LateEventsSensor, day_closed_at
from tests.support.runs import team_dag

TEAM = 240
WEEK = dt.timedelta(days=7)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _sensor(monkeypatch) -> LateEventsSensor:
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", str(7 * 24 * 60))
    duckling = Duckling(TEAM, "settle-t240", "us-east-1", "127.0.0.1", "x", "arn:aws:iam::123456789012:role/x", "ext-id")
    sensor = build_team_dag(duckling, "events", dt.date(2024, 1, 1)).get_task("wait_for_late_events")
    assert isinstance(sensor, LateEventsSensor) and sensor.delta == WEEK and sensor.mode == "reschedule"
    return sensor


def test_the_wait_follows_the_day_the_run_moves_not_when_it_was_triggered(monkeypatch):
    sensor = _sensor(monkeypatch)
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    yesterday, old = today - dt.timedelta(days=1), today - dt.timedelta(days=30)

    def poke(partition_key=None, data_interval_end=None, run_after=now):
        sensor.partition_key = partition_key  # as rendered from the trigger form's option
        return sensor.poke({"data_interval_end": data_interval_end, "dag_run": SimpleNamespace(run_after=run_after)})

    # A repair of an old day triggered now without a logical date (UI, `airflow dags trigger`, `duckling run`,
    # the later pass): starts at once. Airflow's TimeDeltaSensor measured the week from the trigger instead.
    assert poke(partition_key=f"{TEAM}_{old}") is True
    from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor

    assert TimeDeltaSensor(task_id="before", delta=WEEK).poke(
        {"data_interval_end": None, "dag_run": SimpleNamespace(run_after=now)}) is False
    # A top-up or a trigger-form run with a logical date, keyed to an old day: at once too.
    assert poke(partition_key=f"{TEAM}_{old}", data_interval_end=_midnight(today)) is True
    # Scheduled and catch-up runs: the data interval decides; the day that just ended waits, an old one does not.
    assert poke(data_interval_end=_midnight(today)) is False
    assert poke(data_interval_end=_midnight(old + dt.timedelta(days=1))) is True
    # A manual run of the day that just ended waits what is left of the delay, whichever way it names the day.
    assert poke(partition_key=f"{TEAM}_{yesterday}") is False
    assert poke() is False  # no key, no interval: the day before the trigger, i.e. yesterday
    assert poke(run_after=_midnight(old + dt.timedelta(days=1)) + dt.timedelta(hours=3)) is True
    # What is left: the day's end plus the delay, exactly.
    assert day_closed_at(f"{TEAM}_{yesterday}", None, now) + WEEK == _midnight(today) + WEEK
    # A range waits for its last day: an old range passes, one ending yesterday waits like yesterday.
    assert day_closed_at(f"{TEAM}_{old - dt.timedelta(days=9)}..{old}", None, now) == _midnight(old + dt.timedelta(days=1))
    assert poke(partition_key=f"{TEAM}_{old}..{old + dt.timedelta(days=2)}") is True
    assert poke(partition_key=f"{TEAM}_{old}..{yesterday}") is False
    # A malformed key is the export's to refuse (with its own message); here it falls back to the interval.
    assert day_closed_at("not-a-key", _midnight(old), now) == _midnight(old)
    assert day_closed_at(f"{TEAM}_2024-02-30", None, _midnight(old) + dt.timedelta(hours=1)) == _midnight(old)


def test_a_repair_without_a_logical_date_runs_at_once_through_the_dag(stack, monkeypatch):
    """dag.test() a run as the later pass and ``duckling run`` create it: no logical date, so no data interval,
    and the partition in conf. With a week's settle delay it exports and registers the old day at once."""
    from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.scheduling.airflow_env import load_dags
    from tests.support.stack import DAYS

    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", str(7 * 24 * 60))
    insert_events(ClickHouseHook(), TEAM, DAYS[1], 37)
    duckling = stack.new_duckling(TEAM, "settle")
    stack.use(duckling)
    load_dags()
    run = team_dag(TEAM).test(logical_date=None, run_conf={"partition_key": f"{TEAM}_{DAYS[1]}"})
    assert run.state == "success"
    assert run.data_interval_start is None and run.logical_date is None
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"wait_for_late_events": "success", "export": "success", "register": "success"}
    assert lake_day_counts(duckling, "events") == {DAYS[1]: 37} == {
        d: n for d, n in clickhouse_day_counts(ClickHouseHook(), TEAM).items() if d == DAYS[1]}
