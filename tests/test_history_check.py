"""The whole-history check (issue 23, point 3), on the real stack: a team's 25 moved days, then in ClickHouse
one person's events deleted on an old day and late events added to another; one pass re-moves exactly those
two days (nothing else), a second pass in the same week starts nothing, the per-pass bound holds, a paused
team and the days catch-up has not moved are skipped, and a day that differs again is re-moved the next week.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
from airflow_provider_duckling.health import history_check
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.scheduling.ops_dags import HISTORY_CHECK_DAG_ID
from tests.support.runs import logged_text, return_value, run
from tests.test_reconcile import _run_queued

TEAM, PAUSED, MERGED = 380, 381, 382
TODAY = dt.datetime.now(dt.UTC).date()
FIRST = TODAY - dt.timedelta(days=40)
DAYS = [FIRST + dt.timedelta(days=n) for n in range(28)]  # ClickHouse holds 300 events on each
MOVED = DAYS[3:]  # the lake holds these; DAYS[:3] are not moved yet
DELETED, LATE = DAYS[5], DAYS[9]
EVENTS_DAG = f"duckling_events_backfill_team_{TEAM}"


def _history_runs() -> dict[str, dict]:
    """Every ``history_check__`` run of the test's teams: run id → conf."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.run_id.like("history\\_check\\_\\_%", escape="\\"),
                                                    DagRun.dag_id.like("%\\_team\\_38_", escape="\\"))).all()
        return {r.run_id: r.conf for r in runs}


def _check_dag():
    from airflow_provider_duckling.scheduling.airflow_env import load_dags

    bag = load_dags()
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(HISTORY_CHECK_DAG_ID)


def _files_by_day(duckling) -> dict[str, list[str]]:
    """The lake's live data files of the team, by the day their path names."""
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        paths = [p for (p,) in con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall()]
    out: dict[str, list[str]] = {}
    for path in paths:
        day = "-".join(part.split("=")[1] for part in path.split("/") if part.split("=")[0] in ("year", "month", "day"))
        out.setdefault(day, []).append(path)
    return {day: sorted(files) for day, files in out.items()}


def _lake_counts(duckling, team: int = TEAM) -> dict[dt.date, int]:
    """Rows per UTC day of the team in the lake, counted by DuckDB over the table."""
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        rows = con.execute(f"SELECT CAST(timezone('UTC', timestamp) AS DATE) AS d, count(*) FROM lake.posthog.events "
                           f"WHERE team_id = {team} GROUP BY d").fetchall()
    return dict(rows)


def _days(report: dict, key: str) -> list[str]:
    return [d["day"] for d in report[key]]


def _late(ch: ClickHouseHook, day: dt.date, rows: int) -> None:
    insert_events(ch, TEAM, day, rows)


def test_history_check_removes_exactly_the_days_that_differ(stack, monkeypatch, caplog, capfd):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "0")
    monkeypatch.setenv("AIRFLOW__DUCKLING__RECONCILE_DAYS", "3")
    ch = ClickHouseHook()
    insert_events(ch, TEAM, FIRST, 300, days=len(DAYS))
    insert_events(ch, PAUSED, FIRST, 50, days=len(DAYS))
    duckling = stack.new_duckling(TEAM, "history", start_date=FIRST)
    paused = dataclasses.replace(stack.new_duckling(PAUSED, "history", start_date=FIRST), paused=True)
    stack.use(duckling, paused)
    assert run(TEAM, MOVED[0], partition_key=f"{TEAM}_{MOVED[0]}..{MOVED[-1]}").state == "success"

    # Untouched, the statistics agree with ClickHouse on every moved day, without reading a Parquet file.
    compared, lake = history_check.compare_team(duckling, FIRST, TODAY, ch)
    assert lake.days_scanned == 0 and lake.files_by_stats == len(MOVED)
    assert [(c.day, c.clickhouse, c.lake) for c in compared if c.clickhouse != c.lake] == [
        (d, 300, 0) for d in DAYS[:3]]

    # ClickHouse changes two old days: one person's events deleted (a mutation), late events added.
    table = f"{ch.database}.events"
    gone = clickhouse_day_counts(ch, TEAM)[DELETED]
    ch.execute(f"ALTER TABLE {table} DELETE WHERE team_id = {{t:Int64}} AND distinct_id = 'user-7' "
               "AND toDate(timestamp) = {d:Date} SETTINGS mutations_sync = 2", {"t": TEAM, "d": DELETED})
    assert clickhouse_day_counts(ch, TEAM)[DELETED] == gone - 6  # user-7: numbers 7, 57, …, 257
    _late(ch, LATE, 13)
    files_before = _files_by_day(duckling)

    check = _check_dag()
    first = return_value(check.test(), "compare")
    assert first["teams"] == 1 and first["days_compared"] == (TODAY - dt.timedelta(days=4) - FIRST).days + 1
    assert {(d["day"], d["clickhouse_rows"], d["lake_rows"]) for d in first["differing"]} == {
        (DELETED.isoformat(), 294, 300), (LATE.isoformat(), 313, 300)}
    assert _days(first, "reruns") == [LATE.isoformat(), DELETED.isoformat()]  # newest first
    assert first["skipped"] == [f"team {TEAM} events: 3 day(s) not moved yet, {DAYS[0]}..{DAYS[2]}",
                                f"team {PAUSED}: paused"]
    week = first["week"]
    assert _history_runs() == {
        history_check.run_id_for(TEAM, day, week): {"partition_key": f"{TEAM}_{day}"} for day in (DELETED, LATE)}
    text = logged_text(caplog, capfd)
    assert (f"event=history_check teams=1 days_compared={first['days_compared']} differing=2 reruns=2 skipped=2"
            in text)

    # A second pass the same week starts nothing: the day's run of this week exists.
    second = return_value(check.test(), "compare")
    assert second["reruns"] == [] and _days(second, "already_rerun") == _days(first, "reruns")
    assert len(_history_runs()) == 2

    executed = set(_history_runs())
    for run_id in sorted(executed):
        assert _run_queued(EVENTS_DAG, run_id) == "success", run_id
    source = clickhouse_day_counts(ch, TEAM)
    assert _lake_counts(duckling) == {d: source[d] for d in MOVED}
    files_after = _files_by_day(duckling)
    changed = {day for day in set(files_before) | set(files_after) if files_before.get(day) != files_after.get(day)}
    assert changed == {DELETED.isoformat(), LATE.isoformat()}  # nothing else was re-moved

    # The bound: at most history_check_max_days days per team per pass, newest first; the rest next pass.
    monkeypatch.setenv("AIRFLOW__DUCKLING__HISTORY_CHECK_MAX_DAYS", "1")
    ch.execute(f"ALTER TABLE {table} DELETE WHERE team_id = {{t:Int64}} AND distinct_id = 'user-8' "
               "AND toDate(timestamp) = {d:Date} SETTINGS mutations_sync = 2", {"t": TEAM, "d": DELETED})
    _late(ch, DAYS[12], 5)
    _late(ch, DAYS[15], 6)
    third = return_value(check.test(), "compare")
    assert _days(third, "differing") == [DELETED.isoformat(), DAYS[12].isoformat(), DAYS[15].isoformat()]
    assert _days(third, "already_rerun") == [DELETED.isoformat()]  # re-moved this week already
    assert _days(third, "reruns") == [DAYS[15].isoformat()] and _days(third, "deferred") == [DAYS[12].isoformat()]
    assert f"event=history_check_deferred team={TEAM} days=1 max_days=1" in logged_text(caplog, capfd)
    assert len(_history_runs()) == 3

    # Next week: the day that differs again is re-moved again; the day whose re-move still runs waits.
    monkeypatch.setenv("AIRFLOW__DUCKLING__HISTORY_CHECK_MAX_DAYS", "5")
    real_week = history_check.week_of
    monkeypatch.setattr(history_check, "week_of", lambda now: real_week(now + dt.timedelta(days=7)))
    fourth = return_value(check.test(), "compare")
    assert fourth["week"] != week
    assert _days(fourth, "reruns") == [DAYS[12].isoformat(), DELETED.isoformat()]
    assert any(s.startswith(f"team {TEAM} events: runs still going for {DAYS[15]}") for s in fourth["skipped"])
    for run_id in sorted(set(_history_runs()) - executed):
        assert _run_queued(EVENTS_DAG, run_id) == "success", run_id
    source = clickhouse_day_counts(ch, TEAM)
    assert _lake_counts(duckling) == {d: source[d] for d in MOVED}


def test_lake_counts_subtract_deleted_rows_and_count_merged_files_over_the_table(stack):
    """Rows a DuckLake DELETE removed are subtracted (the delete file's count); after files of several days
    were merged into one, those days are counted over the table, and the counts stay the same."""
    ch = ClickHouseHook()
    days = DAYS[:6]
    insert_events(ch, MERGED, days[0], 120, days=len(days))
    duckling = stack.new_duckling(MERGED, "history", start_date=days[0])
    stack.use(duckling)
    assert run(MERGED, days[0], partition_key=f"{MERGED}_{days[0]}..{days[-1]}").state == "success"
    many = ", ".join(f"'user-{n}'" for n in range(25))
    with DuckLakeHook().attach(duckling) as con:
        # A few rows: DuckLake inlines the deletion in its catalog; many rows: it writes a delete file.
        con.execute(f"DELETE FROM lake.posthog.events WHERE team_id = {MERGED} AND distinct_id = 'user-3' "
                    f"AND CAST(timezone('UTC', timestamp) AS DATE) = DATE '{days[2]}'")
        con.execute(f"DELETE FROM lake.posthog.events WHERE team_id = {MERGED} AND distinct_id IN ({many}) "
                    f"AND CAST(timezone('UTC', timestamp) AS DATE) = DATE '{days[4]}'")
        delete_files = con.execute("SELECT count(delete_file) FROM ducklake_list_files('lake', 'events', "
                                   "schema => 'posthog')").fetchone()[0]
    assert delete_files == 1
    expected = {d: n for d, n in _lake_counts(duckling, MERGED).items() if d in days}
    assert expected[days[2]] < 120 and expected[days[4]] < 110 and len(expected) == len(days)

    def counts() -> tuple[dict[dt.date, int], int, int]:
        with DuckLakeHook().attach(duckling, read_only=True) as con:
            found = history_check.lake_day_counts(con, MERGED, days[0], days[-1])
        return found.days, found.files_by_stats, found.days_scanned

    # The delete file's count is subtracted from its file's; the day with inlined deletions is counted.
    assert counts() == (expected, len(days) - 1, 1)
    with DuckLakeHook().attach(duckling) as con:
        con.execute("CALL ducklake_merge_adjacent_files('lake', 'events', schema => 'posthog')")
        spans = con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchone()[0]
    assert spans < len(days)  # merged across days
    found, by_stats, scanned = counts()
    assert found == expected and scanned > 0 and by_stats + scanned >= len(days)
