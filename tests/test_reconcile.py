"""Self-healing reconciliation (issue 14, point 6), on the real stack: a lake day and a source day are
corrupted, the reconciliation DAG finds both (and a person mapped to the wrong person in the lake), starts one
repair run per differing day, and once those have run the lake matches ClickHouse again.

The repair runs are the very runs the DAG's trigger task created (their run id and conf), executed in
this process the way ``dag.test()`` executes its own run (Airflow's ``_run_task`` for each task that
becomes ready): no scheduler needed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import uuid

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import (
    clickhouse_day_counts,
    insert_distinct_id,
    insert_events,
    insert_person,
)
from airflow_provider_duckling.health.reconcile import compare_events, compare_persons, run_id_for
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.scheduling.ops_dags import RECONCILE_DAG_ID
from tests.support.runs import logged_text, return_value, run, team_dag
from tests.test_freshness_alerts import _datagrams, statsd  # noqa: F401 - the StatsD listener fixture

TEAM, PAUSED, LAGGING = 270, 271, 279
TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=n) for n in (3, 2, 1)]  # the reconciled window: the last 3 closed days


def _persons(ch: ClickHouseHook, day: dt.date, count: int, tag: str, team: int = TEAM) -> list[str]:
    """``count`` new persons at noon of ``day``, two distinct_ids each; returns their ids."""
    ids = []
    for n in range(count):
        person = str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconcile/{team}/{tag}/{n}"))
        at = dt.datetime.combine(day, dt.time(12, n), tzinfo=dt.UTC)
        insert_person(ch, team, person, 1, at, properties=json.dumps({"email": f"{tag}{n}@example.com"}))
        for suffix in ("a", "b"):
            insert_distinct_id(ch, team, f"{tag}{n}-{suffix}", person, 1, at)
        ids.append(person)
    return ids


def _repair_runs() -> dict[tuple[str, str], dict]:
    """Every ``reconcile__`` run of the test's teams: (dag_id, run_id) → conf."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.run_id.like("reconcile\\_\\_%", escape="\\"),
                                                    DagRun.dag_id.like("%\\_team\\_27_", escape="\\"))).all()
        return {(r.dag_id, r.run_id): r.conf for r in runs}


def _run_queued(dag_id: str, run_id: str) -> str:
    """Execute an existing queued run (one the reconciliation triggered) in this process, as dag.test()
    executes its own run; returns its final state."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    table, team = dag_id.split("_")[1], int(dag_id.rsplit("_", 1)[1])
    dag = team_dag(team, table)
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    with create_session() as session:
        dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        dag_run.dag = scheduler_dag
        dag_run.state = DagRunState.RUNNING
        session.commit()
        while dag_run.state == DagRunState.RUNNING:
            session.expire_all()
            ready, _ = dag_run.update_state(session=session)
            for ti in ready:
                ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in dag_run.get_task_instances(session=session):
                if ti.state == TaskInstanceState.SCHEDULED:
                    _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
        return str(getattr(dag_run.state, "value", dag_run.state))


def _all_compared(duckling) -> list:
    from airflow_provider_duckling.registry import settings

    compared, waiting = compare_persons(duckling, DAYS, ClickHouseHook(), settings.settle_delay())
    assert waiting == []
    return [*compare_events(duckling, DAYS, ClickHouseHook()), *compared]


def _merge_persons(ch: ClickHouseHook) -> None:
    """Merge the person tables' parts: the ReplacingMergeTrees drop every superseded version, as ClickHouse
    does on its own at any time (this made the comparison flaky when it read as-of-day answers)."""
    for table in ("person", "person_distinct_id2"):
        ch.execute(f"OPTIMIZE TABLE {ch.database}.{table} FINAL")


def test_reconciliation_finds_a_corrupted_lake_day_and_source_day_and_repairs_them_once(
        stack, statsd, monkeypatch, caplog, capfd):  # noqa: F811 - the imported fixture
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "0")
    monkeypatch.setenv("AIRFLOW__DUCKLING__RECONCILE_DAYS", "3")
    ch = ClickHouseHook()
    for index, day in enumerate(DAYS):
        insert_events(ch, TEAM, day, 150 + 10 * index)
        insert_events(ch, PAUSED, day, 40)
    duckling = stack.new_duckling(TEAM, "reconcile", start_date=DAYS[0])
    paused = dataclasses.replace(stack.new_duckling(PAUSED, "reconcile", start_date=DAYS[0]), paused=True)
    stack.use(duckling, paused)

    # The team's lake, complete: events for each day; persons as a full export (at DAYS[0]) then two top-ups.
    first = _persons(ch, DAYS[0], 3, "d0-")
    for day in DAYS:
        assert run(TEAM, day).state == "success"
    assert run(TEAM, DAYS[0], "persons").state == "success"  # the full export
    _persons(ch, DAYS[1], 2, "d1-")
    _persons(ch, DAYS[2], 1, "d2-")
    insert_person(ch, TEAM, first[0], 2, dt.datetime.combine(DAYS[2], dt.time(15), tzinfo=dt.UTC),
                  properties='{"email": "changed@example.com"}')
    for day in DAYS[1:]:
        assert run(TEAM, day, "persons").state == "success"
    _merge_persons(ch)  # first[0]'s version 1, which the lake's full export holds, is gone from ClickHouse
    assert ch.query_rows(f"SELECT count() FROM {ch.database}.person WHERE id = {{p:UUID}}", {"p": first[0]}) == [(1,)]
    assert all(c.matches for c in _all_compared(duckling))
    assert {(c.table, c.day) for c in _all_compared(duckling)} == {(t, d) for t in ("events", "persons") for d in DAYS}

    # Corruption: rows deleted from a lake day, rows added to an exported source day, and in the lake one
    # distinct_id mapped to another person (same row count: only the checksum can see it).
    with DuckLakeHook().attach(duckling) as con:
        con.execute("DELETE FROM lake.posthog.events WHERE uuid IN (SELECT uuid FROM lake.posthog.events WHERE "
                    f"team_id = {TEAM} AND CAST(timestamp AS DATE) = DATE '{DAYS[1]}' ORDER BY uuid LIMIT 5)")
        con.execute(f"UPDATE lake.posthog.persons SET id = '{first[1]}' WHERE team_id = {TEAM} AND distinct_id = 'd2-0-a'")
    insert_events(ch, TEAM, DAYS[2], 7)
    lake_before = lake_day_counts(duckling, "events")
    assert lake_before[DAYS[1]] == 160 - 5 and clickhouse_day_counts(ch, TEAM)[DAYS[2]] == 170 + 7

    bag_dag = _reconcile_dag()
    first_pass = bag_dag.test()
    assert first_pass.state == "success"
    report = return_value(first_pass, "compare")
    assert report["compared_days"] == 6  # both tables, three days, team 270 only
    assert {(d["table"], d["day"], d["clickhouse_rows"], d["lake_rows"]) for d in report["differing"]} == {
        ("events", DAYS[1].isoformat(), 160, 155), ("events", DAYS[2].isoformat(), 177, 170),
        ("persons", DAYS[2].isoformat(), 4, 4)}
    assert report["reruns"] == report["differing"] and report["fixed"] == report["unresolved"] == []
    assert report["skipped"] == [f"team {PAUSED}: paused"]
    repairs = _repair_runs()
    assert repairs == {
        (f"duckling_events_backfill_team_{TEAM}", run_id_for(TEAM, DAYS[1])): {"partition_key": f"{TEAM}_{DAYS[1]}"},
        (f"duckling_events_backfill_team_{TEAM}", run_id_for(TEAM, DAYS[2])): {"partition_key": f"{TEAM}_{DAYS[2]}"},
        (f"duckling_persons_backfill_team_{TEAM}", run_id_for(TEAM, DAYS[2])): {"partition_key": f"{TEAM}_{DAYS[2]}"},
    }  # and nothing for the paused team, whose lake holds nothing at all
    received = {line.split("|")[0] for line in _datagrams(statsd) if ".reconcile." in line}
    assert received == {
        f"airflow.duckling.reconcile.differing_days.team_{TEAM}.events:2",
        f"airflow.duckling.reconcile.differing_days.team_{TEAM}.persons:1",
        f"airflow.duckling.reconcile.reruns.team_{TEAM}.events:1",
        f"airflow.duckling.reconcile.reruns.team_{TEAM}.persons:1",
    }
    text = logged_text(caplog, capfd)
    assert f"event=reconcile_differs team {TEAM} events {DAYS[1]}: clickhouse 160 rows, lake 155 rows (rows differ)" in text
    assert f"event=reconcile_differs team {TEAM} persons {DAYS[2]}: clickhouse 4 rows, lake 4 rows (checksum differ)" in text

    # The repair runs run: the lake matches again.
    for dag_id, run_id in repairs:
        assert _run_queued(dag_id, run_id) == "success", (dag_id, run_id)
    assert all(c.matches for c in _all_compared(duckling))
    assert lake_day_counts(duckling, "events") == {d: n for d, n in clickhouse_day_counts(ch, TEAM).items() if d in DAYS}

    # The next pass reports them fixed and starts nothing.
    second = return_value(bag_dag.test(), "compare")
    assert second["differing"] == second["reruns"] == second["unresolved"] == []
    assert {(d["table"], d["day"]) for d in second["fixed"]} == {
        ("events", DAYS[1].isoformat()), ("events", DAYS[2].isoformat()), ("persons", DAYS[2].isoformat())}
    assert _repair_runs() == repairs

    # A day that differs again after its repair is reported, not re-run a second time.
    with DuckLakeHook().attach(duckling) as con:
        con.execute(f"DELETE FROM lake.posthog.events WHERE team_id = {TEAM} AND CAST(timestamp AS DATE) = DATE '{DAYS[1]}'")
    third = return_value(bag_dag.test(), "compare")
    assert [(d["table"], d["day"], d["lake_rows"]) for d in third["unresolved"]] == [("events", DAYS[1].isoformat(), 0)]
    assert third["reruns"] == [] and _repair_runs() == repairs


def _reconcile_dag():
    from airflow_provider_duckling.scheduling.airflow_env import load_dags

    bag = load_dags()
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(RECONCILE_DAG_ID)


def _persons_tallies(duckling, moved_by_runs) -> tuple[list[tuple[dt.date, int, int, bool]], list[dt.date]]:
    from airflow_provider_duckling.registry import settings

    compared, waiting = compare_persons(duckling, DAYS, ClickHouseHook(), settings.settle_delay(), moved_by_runs)
    return [(c.day, c.source.rows, c.lake.rows, c.matches) for c in compared], waiting


def test_persons_days_compare_latest_answers_up_to_the_first_day_not_moved(stack, monkeypatch):
    """A lake a day behind (the last day's top-up not run yet), after ClickHouse merged away the versions the
    lake's earlier rows hold: the moved days match, the day not moved waits, and a lake row lost is seen."""
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "0")
    ch = ClickHouseHook()
    duckling = stack.new_duckling(LAGGING, "reconcile", start_date=DAYS[0])
    stack.use(duckling)
    people = _persons(ch, DAYS[0], 3, "lag0-", LAGGING)
    assert run(LAGGING, DAYS[0], "persons").state == "success"  # the full export
    _persons(ch, DAYS[1], 1, "lag1-", LAGGING)
    insert_person(ch, LAGGING, people[0], 2, dt.datetime.combine(DAYS[1], dt.time(10), tzinfo=dt.UTC),
                  properties='{"email": "second@example.com"}')
    assert run(LAGGING, DAYS[1], "persons").state == "success"
    for person in people[:2]:  # changed again on the last day, whose top-up has not run
        insert_person(ch, LAGGING, person, 3, dt.datetime.combine(DAYS[2], dt.time(9), tzinfo=dt.UTC),
                      properties='{"email": "third@example.com"}')
    _merge_persons(ch)

    nothing_ran = lambda empty: set()  # noqa: E731 - no Airflow run moved the last day
    # lag0-0/1 changed after the last moved day: left out on both sides (the lake's DAYS[0] and DAYS[1] rows
    # of them are right for their time); lag0-2 is the first day's, lag1-0 the second's.
    assert _persons_tallies(duckling, nothing_ran) == ([(DAYS[0], 2, 2, True), (DAYS[1], 2, 2, True)], [DAYS[2]])
    # Counting the last day as moved shows why the prefix matters: the lake's older rows of lag0-0 and lag0-1
    # would read as the earlier days' latest, and the last day as missing.
    assert _persons_tallies(duckling, None) == (
        [(DAYS[0], 2, 4, False), (DAYS[1], 2, 4, False), (DAYS[2], 4, 0, False)], [])

    assert run(LAGGING, DAYS[2], "persons").state == "success"
    assert _persons_tallies(duckling, nothing_ran) == (
        [(DAYS[0], 2, 2, True), (DAYS[1], 2, 2, True), (DAYS[2], 4, 4, True)], [])
    # A lake row lost: lag0-0-a's latest row is now the second day's, stale; both days differ.
    with DuckLakeHook().attach(duckling) as con:
        con.execute(f"DELETE FROM lake.posthog.persons WHERE team_id = {LAGGING} AND distinct_id = 'lag0-0-a' "
                    f"AND CAST(_timestamp AS DATE) = DATE '{DAYS[2]}'")
    assert _persons_tallies(duckling, nothing_ran) == (
        [(DAYS[0], 2, 2, True), (DAYS[1], 2, 3, False), (DAYS[2], 4, 3, False)], [])
