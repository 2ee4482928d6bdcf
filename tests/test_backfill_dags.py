"""The walking skeleton end to end: 3 teams × 5 days of events through the generated Airflow DAGs
(dag.test) on real engines — chdb behind ClickHouse's HTTP interface, moto S3/STS, PostgreSQL catalogs."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.scheduling.airflow_env import load_dags, run_day
from tests.support.stack import DAYS, TEAMS

KEY = re.compile(
    r"^backfill/events/team_id=(\d+)/year=(\d{4})/month=(\d{2})/day=(\d{2})/[A-Za-z0-9_.-]+-try\d+\.parquet$"
)


@pytest.fixture(scope="module")
def backfilled(stack):
    ducklings = [stack.new_duckling(team, "main") for team in TEAMS]
    stack.use(*ducklings)
    bag = load_dags()
    assert not bag.import_errors
    for duckling in ducklings:
        dag = bag.get_dag(f"duckling_events_backfill_team_{duckling.team_id}")
        for day in DAYS:
            assert run_day(dag, day).state == "success"
    return ducklings, bag


def test_generated_dags_have_the_expected_shape(backfilled):
    ducklings, bag = backfilled
    for duckling in ducklings:
        dag = bag.get_dag(f"duckling_events_backfill_team_{duckling.team_id}")
        assert dag.catchup is True
        assert dag.start_date == dt.datetime(2024, 3, 8, tzinfo=dt.UTC)
        assert [t.task_id for t in dag.topological_sort()] == ["wait_for_late_events", "export", "register"]
        assert dag.max_active_runs == 4
        assert dag.get_task("export").retries == 3
        # History moves in batches: the first run is the rest of 2024's first quarter, run once it has ended.
        timetable = coerce_to_core_timetable(dag.timetable)
        info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=_no_restriction(dag))
        assert info.data_interval.start == dt.datetime(2024, 3, 8, tzinfo=dt.UTC)
        assert info.data_interval.end == info.run_after == dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
        # From the daily-from day on, day D's run starts only once D has ended: [D, D+1), after D+1.
        from airflow.timetables.base import DataInterval

        first_daily = dt.datetime.combine(timetable.daily_from, dt.time(), tzinfo=dt.UTC)
        last = DataInterval(first_daily - dt.timedelta(days=3), first_daily)
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=_no_restriction(dag))
        assert info.data_interval.start == first_daily
        assert info.data_interval.end == info.run_after == first_daily + dt.timedelta(days=1)


def coerce_to_core_timetable(timetable):
    from airflow.serialization.encoders import coerce_to_core_timetable as coerce

    return coerce(timetable)


def _no_restriction(dag):
    from airflow.timetables.base import TimeRestriction

    return TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)


def test_lake_rows_equal_clickhouse_rows_per_team_and_day(backfilled):
    ducklings, _ = backfilled
    clickhouse = ClickHouseHook()
    for duckling in ducklings:
        expected = clickhouse_day_counts(clickhouse, duckling.team_id)
        assert set(expected) == set(DAYS)
        assert lake_day_counts(duckling, "events") == expected


def test_values_round_trip_including_day_boundaries(backfilled):
    ducklings, _ = backfilled
    duckling, day = ducklings[1], DAYS[2]
    source = ClickHouseHook().query_rows(
        "SELECT toString(uuid), timestamp, properties, team_id, toString(person_id), person_mode, historical_migration "
        "FROM posthog.events WHERE team_id = {t:Int64} AND toDate(timestamp) = {d:Date}",
        {"t": duckling.team_id, "d": day.isoformat()},
    )
    with DuckLakeHook().attach(duckling) as con:
        lake = con.execute(
            "SELECT uuid, timestamp, properties, team_id, person_id, person_mode, historical_migration "
            "FROM lake.posthog.events WHERE timestamp >= ? AND timestamp < ?",
            [dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)],
        ).fetchall()

    def norm(rows):
        return sorted(
            (u, (ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)).astimezone(dt.UTC), p, int(t), pid, mode, bool(h))
            for u, ts, p, t, pid, mode, h in rows
        )

    assert len(source) > 0
    assert norm(lake) == norm(source)
    stamps = sorted(row[1] for row in norm(lake))
    assert stamps[0] == dt.datetime.combine(day, dt.time(0, 0, 0, 0), tzinfo=dt.UTC)
    assert stamps[-1] == dt.datetime.combine(day, dt.time(23, 59, 59, 999999), tzinfo=dt.UTC)
    assert any("it's" in row[2] for row in lake)


def test_object_keys_follow_the_layout_and_lake_returns_real_team_ids(backfilled, stack):
    ducklings, _ = backfilled
    for duckling in ducklings:
        keys = stack.keys(duckling.bucket, "backfill/")
        assert len(keys) == len(DAYS)
        days_seen = set()
        for key in keys:
            match = KEY.match(key)
            assert match, key
            assert int(match.group(1)) == duckling.team_id
            days_seen.add(dt.date(int(match.group(2)), int(match.group(3)), int(match.group(4))))
        assert days_seen == set(DAYS)
        with DuckLakeHook().attach(duckling) as con:
            files = con.execute("SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall()
            team_ids = con.execute("SELECT DISTINCT team_id, project_id FROM lake.posthog.events").fetchall()
        assert sorted(f"s3://{duckling.bucket}/{k}" for k in keys) == sorted(f for (f,) in files)
        assert team_ids == [(duckling.team_id, duckling.team_id)]


def test_rerunning_a_day_keeps_rows_and_exactly_one_registered_file(backfilled, stack):
    ducklings, bag = backfilled
    duckling, day = ducklings[0], DAYS[3]
    dag = bag.get_dag(f"duckling_events_backfill_team_{duckling.team_id}")
    before = lake_day_counts(duckling, "events")
    prefix = f"backfill/events/team_id={duckling.team_id}/year={day:%Y}/month={day:%m}/day={day:%d}/"
    old_keys = stack.keys(duckling.bucket, prefix)

    assert run_day(dag, day).state == "success"  # dag.test clears the day's task instances and re-runs them
    assert run_day(dag, day).state == "success"

    assert lake_day_counts(duckling, "events") == before
    keys = stack.keys(duckling.bucket, prefix)
    assert len(keys) == len(old_keys) + 2  # every attempt writes a new object; none is overwritten
    with DuckLakeHook().attach(duckling) as con:
        live = [f for (f,) in con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall() if prefix in f]
    assert len(live) == 1
    assert live[0] not in {f"s3://{duckling.bucket}/{k}" for k in old_keys}
