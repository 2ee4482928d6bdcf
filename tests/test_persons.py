"""Persons: daily partitions by the current version's _timestamp, the full export, and the
persons_current view — against ClickHouse's latest state (ReplacingMergeTree versions, tombstones)."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.sample_data import insert_distinct_id, insert_person
from airflow_provider_duckling.tables import PERSONS, export_select
from tests.support.runs import run
from tests.support.stack import DAYS

TEAM = 4
A, B, C, D, E = (f"00000000-0000-4000-8000-00000000000{n}" for n in range(1, 6))


def at(day_index: int, hour: int = 10) -> dt.datetime:
    return dt.datetime.combine(DAYS[day_index], dt.time(hour), tzinfo=dt.UTC)


def clickhouse_latest() -> set[tuple[str, str, str]]:
    """(distinct_id, person id, properties) of every current, non-deleted row in ClickHouse."""
    rows = ClickHouseHook().query_rows(export_select(PERSONS, "posthog", daily=False), {"team_id": TEAM})
    return {(r[1], r[2], r[3]) for r in rows}


def lake(duckling, relation: str) -> list[tuple[str, str, str]]:
    with DuckLakeHook().attach(duckling) as con:
        return sorted(con.execute(f"SELECT distinct_id, id, properties FROM lake.posthog.{relation}").fetchall())


@pytest.fixture(scope="module")
def history(stack):
    """Phase by phase, as the days happen: each day's changes, then that day's top-up run."""
    ch = ClickHouseHook()
    duckling = stack.new_duckling(TEAM, "persons")
    # Day 0: five persons.
    for person, ids in ((A, ["a1"]), (B, ["b1", "b2"]), (C, ["c1"]), (D, ["d1"]), (E, ["e1"])):
        insert_person(ch, TEAM, person, 1, at(0), properties='{"v": 1}')
        for distinct_id in ids:
            insert_distinct_id(ch, TEAM, distinct_id, person, 1, at(0))
    assert run(TEAM, DAYS[0], "persons").state == "success"
    after_day0 = lake(duckling, "persons")
    # Day 1: A updated; B merged with a third distinct_id; C deleted.
    insert_person(ch, TEAM, A, 2, at(1), properties='{"v": 2}')
    insert_person(ch, TEAM, B, 2, at(1), properties='{"v": 2}')
    insert_distinct_id(ch, TEAM, "b3", B, 1, at(1))
    insert_person(ch, TEAM, C, 2, at(1), is_deleted=True)
    assert run(TEAM, DAYS[1], "persons").state == "success"
    # Day 2: A updated again; d1 moves from D to E (E gets a new version).
    insert_person(ch, TEAM, A, 3, at(2), properties='{"v": 3}')
    insert_distinct_id(ch, TEAM, "d1", E, 2, at(2))
    insert_person(ch, TEAM, E, 2, at(2), properties='{"v": 2}')
    assert run(TEAM, DAYS[2], "persons").state == "success"
    return duckling, after_day0


def test_daily_partitions_hold_each_days_current_versions(history):
    duckling, after_day0 = history
    assert after_day0 == sorted([("a1", A, '{"v": 1}'), ("b1", B, '{"v": 1}'), ("b2", B, '{"v": 1}'),
                                 ("c1", C, '{"v": 1}'), ("d1", D, '{"v": 1}'), ("e1", E, '{"v": 1}')])
    rows = lake(duckling, "persons")
    assert ("a1", A, '{"v": 3}') in rows and ("a1", A, '{"v": 2}') in rows  # a person updated on three days
    assert sum(1 for r in rows if r[0] == "a1") == 3  # …sits in three partitions of the table


def test_view_gives_one_current_row_per_distinct_id(history):
    duckling, _ = history
    view = lake(duckling, "persons_current")
    assert len({r[0] for r in view}) == len(view)
    latest = clickhouse_latest()
    assert latest == {("a1", A, '{"v": 3}'), ("b1", B, '{"v": 2}'), ("b2", B, '{"v": 2}'), ("b3", B, '{"v": 2}'),
                      ("d1", E, '{"v": 2}'), ("e1", E, '{"v": 2}')}
    # Updates, merges and moved distinct_ids are current in the view from the daily top-ups alone.
    assert {r for r in view if r[0] != "c1"} == latest
    # A deletion leaves no new row to supersede the old one: the deleted person stays in the view until a
    # full export (or a re-run of its last day) — the next test.
    assert ("c1", C, '{"v": 1}') in view


def test_full_export_replaces_the_teams_persons_in_one_transaction(history, stack):
    duckling, _ = history
    assert run(TEAM, DAYS[2], "persons", full_export=True).state == "success"
    assert set(lake(duckling, "persons")) == clickhouse_latest()
    assert set(lake(duckling, "persons_current")) == clickhouse_latest()
    keys = stack.keys(duckling.bucket, f"backfill/persons/team_id={TEAM}/full/")
    assert len(keys) == 1 and keys[0].endswith(".parquet")


def test_backfilling_after_the_fact_matches_clickhouse_exactly(history):
    duckling, _ = history
    for day in DAYS[:3]:
        assert run(TEAM, day, "persons", delete_tables=(day == DAYS[0])).state == "success"
    assert sorted(set(lake(duckling, "persons"))) == lake(duckling, "persons")  # no duplicates
    assert set(lake(duckling, "persons")) == clickhouse_latest()
    assert set(lake(duckling, "persons_current")) == clickhouse_latest()
