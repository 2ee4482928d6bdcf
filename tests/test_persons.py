"""Persons, exact every day: a scripted history of twelve days with every kind of change — new persons,
new person versions, merges, a distinct_id moved with no person-row change, a deleted mapping, a deleted
person, a re-created mapping — top-ups day by day, and after every day the lake's ``persons_current`` equals
ClickHouse's ``FINAL`` answer (distinct_id → person id, properties, version). The first run writes the
team's full export (persons history is one export); re-running days or back-filling after the fact gives the
same answer, and no row is duplicated.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from airflow_provider_duckling.demo.sample_data import insert_distinct_id, insert_person
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from tests.support.runs import run

TEAM = 4
FIRST = dt.date(2024, 5, 1)
DAYS = [FIRST + dt.timedelta(days=n) for n in range(12)]
# Versions of the same team that are not ours: the same distinct_ids in another team must never leak in.
OTHER_TEAM = 5


def pid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"person/{name}"))


def at(day: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(DAYS[day], dt.time(hour, minute), tzinfo=dt.UTC)


def script(ch: ClickHouseHook, day: int) -> None:
    """The changes of one day (person versions and mapping versions, as PostHog writes them)."""
    person = lambda name, version, props=None, deleted=False, hour=10: insert_person(  # noqa: E731
        ch, TEAM, pid(name), version, at(day, hour), properties=props or f'{{"name": "{name}", "v": {version}}}',
        is_deleted=deleted)
    mapping = lambda did, name, version, deleted=False, hour=10: insert_distinct_id(  # noqa: E731
        ch, TEAM, did, pid(name), version, at(day, hour), is_deleted=deleted)
    if day == 0:  # history before the duckling: ten persons, some with two distinct_ids
        for n in range(10):
            person(f"p{n}", 1)
            mapping(f"d{n}", f"p{n}", 1)
        for n in (1, 3, 5):
            mapping(f"d{n}b", f"p{n}", 1)
        insert_person(ch, OTHER_TEAM, pid("other"), 1, at(0), properties='{"other": true}')
        insert_distinct_id(ch, OTHER_TEAM, "d0", pid("other"), 1, at(0))
    elif day == 1:  # new person versions
        person("p0", 2)
        person("p1", 2, hour=23)
    elif day == 2:  # a merge: p3's distinct_ids move to p2, p3 is deleted, p2 gets a new version
        mapping("d3", "p2", 2)
        mapping("d3b", "p2", 2)
        person("p3", 2, deleted=True)
        person("p2", 2)
    elif day == 3:  # a distinct_id moves to another person with NO person-row change
        mapping("d4", "p6", 2)
    elif day == 4:  # a mapping is deleted (the person stays, with its other distinct_id)
        mapping("d5b", "p5", 2, deleted=True)
    elif day == 5:  # a person is deleted (a privacy request): its mapping still points at it
        person("p7", 2, deleted=True)
    elif day == 6:  # nothing changes
        pass
    elif day == 7:  # a new person and an update in the same day, the update a second before midnight
        person("p10", 1)
        mapping("d10", "p10", 1)
        insert_person(ch, TEAM, pid("p0"), 3, dt.datetime.combine(DAYS[7], dt.time(23, 59, 59), tzinfo=dt.UTC),
                      properties='{"name": "p0", "v": 3}')
    elif day == 8:  # a deleted mapping comes back, pointing at another person
        mapping("d5b", "p8", 3)
    elif day == 9:  # several versions of one person in a day; the highest wins
        for version, hour in ((3, 9), (5, 11), (4, 13)):
            person("p1", version, hour=hour)
    elif day == 10:  # the moved distinct_id's new person is updated: it must follow
        person("p6", 2)
    elif day == 11:  # a person is deleted together with its mappings (PostHog's delete)
        person("p9", 2, deleted=True)
        mapping("d9", "p9", 2, deleted=True)


def reference(ch: ClickHouseHook) -> set[tuple[str, str, str, int]]:
    """ClickHouse's current answer, with FINAL: (distinct_id, person id, properties, person version)."""
    rows = ch.query_rows(
        "SELECT pd.distinct_id, toString(p.id), p.properties, p.version "
        "FROM posthog.person_distinct_id2 AS pd FINAL INNER JOIN posthog.person AS p FINAL "
        "ON p.id = pd.person_id AND p.team_id = pd.team_id "
        "WHERE pd.team_id = {team:Int64} AND pd.is_deleted = 0 AND p.is_deleted = 0",
        {"team": TEAM},
    )
    return {(str(d), str(i), str(props), int(v)) for d, i, props, v in rows}


def current(duckling) -> set[tuple[str, str, str, int]]:
    rows = lake(duckling, "SELECT distinct_id, id, properties, person_version FROM lake.posthog.persons_current")
    assert len({r[0] for r in rows}) == len(rows), "one current row per distinct_id"
    return {(d, i, props, int(v)) for d, i, props, v in rows}


def lake(duckling, sql: str) -> list[tuple]:
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        return con.execute(sql).fetchall()


def full_exports(stack, duckling) -> list[str]:
    return stack.keys(duckling.bucket, f"backfill/persons/team_id={TEAM}/full/")


@pytest.fixture(scope="module")
def history(stack):
    """Day by day, as the days happen: that day's changes, then that day's top-up run; the lake's view is
    compared with ClickHouse after every one."""
    ch = ClickHouseHook()
    duckling = stack.new_duckling(TEAM, "persons", start_date=DAYS[0])
    after: dict[int, tuple[set, set]] = {}
    for day in range(len(DAYS)):
        script(ch, day)
        assert run(TEAM, DAYS[day], "persons").state == "success"
        after[day] = (current(duckling), reference(ch))
    return duckling, after


def test_every_days_top_up_leaves_the_lake_equal_to_clickhouse_final(history):
    _, after = history
    for day, (lake_view, final) in after.items():
        assert lake_view == final, f"day {day} ({DAYS[day]}): lake - final {lake_view - final}, final - lake {final - lake_view}"
    # The script did what it says: each kind of change shows in the answer of its day.
    by_id = {day: {r[0]: r for r in final} for day, (_, final) in after.items()}
    assert by_id[3]["d4"][1] == pid("p6") and by_id[2]["d4"][1] == pid("p4")  # moved, no person change
    assert "d5b" not in by_id[4] and "d5b" in by_id[3]  # mapping deleted
    assert "d7" not in by_id[5] and "d7" in by_id[4]  # person deleted, mapping left pointing at it
    assert by_id[2]["d3"][1] == pid("p2") and by_id[2]["d3b"][1] == pid("p2")  # merge
    assert by_id[8]["d5b"][1] == pid("p8")  # a deleted mapping came back
    assert by_id[9]["d1"][3] == 5  # the highest version of the day
    assert by_id[10]["d4"][2] == '{"name": "p6", "v": 2}'  # the moved distinct_id follows its new person
    assert "d9" not in by_id[11]
    assert "d0" in by_id[0] and by_id[0]["d0"][1] == pid("p0")  # not the other team's d0


def test_the_first_run_is_the_full_export_and_each_day_holds_only_its_changes(history, stack):
    duckling, _ = history
    assert len(full_exports(stack, duckling)) == 1  # the first run: the team's persons history in one export
    per_day = dict(lake(duckling, "SELECT CAST(_timestamp AS DATE) AS d, count(*) FROM lake.posthog.persons "
                                  "WHERE team_id = 4 GROUP BY d"))
    # Day 3 changed one distinct_id (d4 moved); day 6 changed nothing; day 11 deleted p9 and d9.
    assert per_day.get(DAYS[3]) == 1
    assert DAYS[6] not in per_day
    assert per_day.get(DAYS[11]) == 1
    # Tombstones: the deleted ones are rows without a person, never in the view.
    tombstones = {d for (d,) in lake(duckling, "SELECT distinct_id FROM lake.posthog.persons WHERE id IS NULL")}
    assert {"d5b", "d7", "d9"} <= tombstones  # a deleted mapping, a deleted person, a deleted person and mapping
    assert lake(duckling, "SELECT count(*) FROM lake.posthog.persons WHERE team_id <> 4")[0][0] == 0


def test_rerunning_any_day_keeps_the_answer_and_duplicates_nothing(history):
    """A re-run replaces its day's rows in one swap. ClickHouse may have merged away versions older than a
    later one since, so an old day's own rows can differ on a re-run (they state that day's end from the
    versions still there); the later day that superseded them keeps the answer exact."""
    duckling, after = history
    for day in (11, 3, 0, 7, 11):
        assert run(TEAM, DAYS[day], "persons").state == "success"
        assert current(duckling) == after[len(DAYS) - 1][1], f"after re-running day {day}"
    duplicates = lake(duckling, "SELECT distinct_id, CAST(_timestamp AS DATE), count(*) FROM lake.posthog.persons "
                                "GROUP BY ALL HAVING count(*) > 1")
    assert duplicates == []
    # The newest day's partition is exactly what it was (nothing newer can supersede it).
    assert {r[0] for r in lake(duckling, f"SELECT distinct_id FROM lake.posthog.persons WHERE CAST(_timestamp AS DATE) = DATE '{DAYS[11]}'")} == {"d9"}


def test_backfilling_after_the_fact_gives_the_same_answer(history, stack):
    duckling, after = history
    final = after[len(DAYS) - 1][1]
    # A reset: the table is dropped and the team's full export written in one transaction…
    assert run(TEAM, DAYS[0], "persons", delete_tables=True).state == "success"
    assert current(duckling) == final
    assert len(full_exports(stack, duckling)) == 2
    # …and the days it covers are skipped, not re-aggregated; the last day (not covered) still runs.
    runs = {day: run(TEAM, DAYS[day], "persons") for day in range(len(DAYS))}
    states = {day: {ti.task_id: ti.state for ti in r.get_task_instances()}["export"] for day, r in runs.items()}
    assert all(states[day] == "skipped" for day in range(len(DAYS) - 1)), states
    assert states[len(DAYS) - 1] == "success"
    assert current(duckling) == final
    rows = lake(duckling, "SELECT distinct_id, _timestamp, count(*) FROM lake.posthog.persons GROUP BY ALL HAVING count(*) > 1")
    assert rows == []


def test_the_full_export_is_remembered_through_maintenance(history, stack):
    """The full export's time is the persons table's comment, set in the transaction that registered it:
    merging the files and expiring every old snapshot leave it, so covered days stay skipped and no second
    full export is written."""
    from airflow_provider_duckling.transfer.maintenance import run_maintenance

    duckling, after = history
    exports = set(full_exports(stack, duckling))
    comment = lake(duckling, "SELECT comment FROM duckdb_tables() WHERE table_name = 'persons'")[0][0]
    assert "full export as of" in comment and "persons_current" in comment
    report = run_maintenance(TEAM, dry_run=False, snapshot_retention=dt.timedelta(0),
                             orphan_retention=dt.timedelta(days=7), merge=True)
    assert report, "maintenance ran"
    assert lake(duckling, "SELECT comment FROM duckdb_tables() WHERE table_name = 'persons'")[0][0] == comment
    r = run(TEAM, DAYS[3], "persons")
    assert {ti.task_id: ti.state for ti in r.get_task_instances()}["export"] == "skipped"
    assert set(full_exports(stack, duckling)) <= exports  # no new full export (cleanup may delete replaced ones)
    assert current(duckling) == after[len(DAYS) - 1][1]
