"""Exactly once: every partition of a 3-team × 10-day backfill run three times — the catch-up, a clear
and re-run of each day, and a re-trigger of each day by partition key — leaves lake rows == ClickHouse rows
per team-day, each day in exactly one registered file, and no stale file referenced."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from tests.support.runs import run, team_dag

TEAMS = [41, 42, 43]
DAYS10 = [dt.date(2024, 5, 1) + dt.timedelta(days=n) for n in range(10)]


@pytest.mark.slow
def test_three_passes_over_thirty_partitions_leave_each_day_exactly_once(stack):
    ch = ClickHouseHook()
    for team in TEAMS:
        for index, day in enumerate(DAYS10):
            insert_events(ch, team, day, 50 + 7 * index + team)
    ducklings = [stack.new_duckling(team, "once", start_date=DAYS10[0]) for team in TEAMS]
    stack.use(*ducklings)
    dags = {team: team_dag(team) for team in TEAMS}
    for team in TEAMS:
        for day in DAYS10:
            assert run(team, day).state == "success"  # pass 1: the catch-up
            assert run(team, day).state == "success"  # pass 2: cleared and re-run (new attempt, new file)
            # pass 3: re-triggered by partition key from another run
            assert run(team, DAYS10[0], partition_key=f"{team}_{day.isoformat()}").state == "success"
    assert all(dags.values())

    for duckling in ducklings:
        expected = clickhouse_day_counts(ch, duckling.team_id)
        assert lake_day_counts(duckling, "events") == {d: expected[d] for d in DAYS10}
        keys = stack.keys(duckling.bucket, "backfill/events/")
        assert len(keys) == 3 * len(DAYS10)  # three attempts per day, none overwritten
        with DuckLakeHook().attach(duckling) as con:
            live = sorted(f for (f,) in con.execute(
                "SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall())
            history = con.execute(
                "SELECT count(*) FROM __ducklake_metadata_lake.ducklake_data_file").fetchone()[0]
        assert len(live) == len(DAYS10)  # each day in exactly one registered file
        for day in DAYS10:
            prefix = f"backfill/events/team_id={duckling.team_id}/year={day:%Y}/month={day:%m}/day={day:%d}/"
            day_keys = [k for k in keys if k.startswith(prefix)]
            day_live = [f for f in live if prefix in f]
            assert len(day_keys) == 3 and len(day_live) == 1
        assert history == 3 * len(DAYS10)  # every attempt's file registered once, the older two since replaced
