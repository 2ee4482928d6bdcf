"""The whole-history check: every day of every team's events history whose row count differs between
ClickHouse and the lake, re-moved (so deletions and late events anywhere in history reach the lake).

The daily reconciliation (:mod:`~airflow_provider_duckling.health.reconcile`) compares the last
``reconcile_days`` days with checksums; this check compares every older day by its row count, cheaply enough
to run weekly on years of history:

* ClickHouse: one statement per team, ``count()`` per UTC day of the team's rows. The primary key
  ``(team_id, toDate(timestamp), …)`` limits it to the team's granules and it reads ``timestamp`` (and
  ``team_id``, to filter the granules at the team's edges), no other column (``bench/p12_history_check.py``
  shows ``EXPLAIN indexes = 1`` and the rows and bytes read).
* The lake: DuckLake's own per-file statistics, read from its catalog without opening a Parquet file: each
  live data file's ``record_count`` less its live delete file's ``delete_count``, on the UTC day of its
  ``timestamp`` statistics. Each exported file holds one UTC day of one team; a file whose statistics span
  several days (a maintenance merge) or several teams, or lack them, is not attributed by its statistics:
  its days are counted by DuckDB over the lake table, which DuckLake prunes to the files whose statistics
  overlap those days; so are the days of a file with deletions DuckLake inlined in its catalog (a ``DELETE``
  of a few rows writes no delete file). Rows inlined in the catalog (never written by this provider) make
  the whole history counted that way.

Events only: persons carry their deletions themselves (tombstones, compared by the reconciliation).

A differing day is re-moved by a run of the team's events DAG with ``conf = {"partition_key": …}`` and the
run id ``history_check__{team}_{day}__{ISO week}``: a second pass in the same week starts nothing for that
day (the run exists), a day that differs again in a later week is re-moved again. Skipped, as the
reconciliation skips them: paused ducklings, days whose runs are still going, and days not moved yet (the
lake holds nothing of the day and the run that moves it — the day's own, or its history batch's — has not
succeeded). At most ``[duckling] history_check_max_days`` days per team per pass are re-moved, newest first;
the rest wait for the next pass. The last ``reconcile_days`` days are the daily reconciliation's.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import duckdb

from airflow_provider_duckling.common.quoting import clickhouse_ident, duckdb_ident, duckdb_literal
from airflow_provider_duckling.domain.tables import DAYS_END, DAYS_START, EVENTS, EVENTS_ALIAS, LAKE_SCHEMA
from airflow_provider_duckling.health.reconcile import dag_paused
from airflow_provider_duckling.hooks.ducklake import LAKE_ALIAS
from airflow_provider_duckling.registry.catalog import Duckling

log = logging.getLogger(__name__)

RUN_PREFIX = "history_check__"
_METADATA = duckdb_ident(f"__ducklake_metadata_{LAKE_ALIAS}")


# ---------------------------------------------------------------- ClickHouse


def source_sql(database: str) -> str:
    """Rows per UTC day of one team in [``{first:Date}``, ``{end:Date}``): the primary key selects the
    team's granules of those days; only ``timestamp`` is read (``toDate32``: exact for every year)."""
    ts = f"{EVENTS_ALIAS}.{clickhouse_ident('timestamp')}"
    return (f"SELECT toDate32({ts}, 'UTC') AS day, count() "
            f"FROM {clickhouse_ident(database)}.{clickhouse_ident('events')} AS {EVENTS_ALIAS} "
            f"WHERE {EVENTS_ALIAS}.{clickhouse_ident('team_id')} = {{team_id:Int64}} "
            f"AND {ts} >= {DAYS_START} AND {ts} < {DAYS_END} GROUP BY day")


def source_day_counts(hook: Any, team_id: int, first: dt.date, last: dt.date) -> dict[dt.date, int]:
    """ClickHouse's rows per UTC day of the team in [first, last] (one statement)."""
    rows = hook.query_rows(source_sql(hook.database),
                           {"team_id": team_id, "first": first, "end": last + dt.timedelta(days=1)})
    return {_as_date(d): int(n) for d, n in rows}


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


# ---------------------------------------------------------------- the lake


@dataclass
class LakeCounts:
    """The lake's rows per UTC day of a team, and how they were found."""

    days: dict[dt.date, int] = field(default_factory=dict)
    files_by_stats: int = 0
    days_scanned: int = 0
    reason: str = ""


_TABLE_ID_SQL = """
SELECT t.table_id FROM {meta}.ducklake_table t
JOIN {meta}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
WHERE t.end_snapshot IS NULL AND s.schema_name = {schema} AND t.table_name = {table}
"""

#: Each live data file of a table: its id, live rows (less its delete file's) and team_id / day statistics.
_FILES_SQL = """
WITH cols AS (
    SELECT column_id, column_name FROM {meta}.ducklake_column
    WHERE table_id = {table_id} AND end_snapshot IS NULL AND parent_column IS NULL
      AND column_name IN ('team_id', {day})
), stats AS (
    SELECT st.data_file_id,
           max(st.min_value) FILTER (WHERE cols.column_name = 'team_id') AS team_min,
           max(st.max_value) FILTER (WHERE cols.column_name = 'team_id') AS team_max,
           max(st.min_value) FILTER (WHERE cols.column_name = {day}) AS day_min,
           max(st.max_value) FILTER (WHERE cols.column_name = {day}) AS day_max
    FROM {meta}.ducklake_file_column_stats st JOIN cols ON cols.column_id = st.column_id
    WHERE st.table_id = {table_id}
    GROUP BY st.data_file_id
)
SELECT f.data_file_id, f.record_count - coalesce(d.delete_count, 0) AS live_rows,
       TRY_CAST(stats.team_min AS BIGINT), TRY_CAST(stats.team_max AS BIGINT),
       CAST(timezone('UTC', TRY_CAST(stats.day_min AS TIMESTAMPTZ)) AS DATE),
       CAST(timezone('UTC', TRY_CAST(stats.day_max AS TIMESTAMPTZ)) AS DATE)
FROM {meta}.ducklake_data_file f
LEFT JOIN {meta}.ducklake_delete_file d ON d.data_file_id = f.data_file_id AND d.end_snapshot IS NULL
LEFT JOIN stats ON stats.data_file_id = f.data_file_id
WHERE f.table_id = {table_id} AND f.end_snapshot IS NULL
"""


def _table_id(con: duckdb.DuckDBPyConnection) -> int | None:
    row = con.execute(_TABLE_ID_SQL.format(meta=_METADATA, schema=duckdb_literal(LAKE_SCHEMA),
                                           table=duckdb_literal(EVENTS.name))).fetchone()
    return None if row is None else int(row[0])


def _inlined_rows(con: duckdb.DuckDBPyConnection, table_id: int) -> int:
    """Live rows of the table inlined in the catalog (DuckLake's small-insert storage; never ours)."""
    tables = con.execute(f"SELECT table_name FROM {_METADATA}.ducklake_inlined_data_tables "
                         f"WHERE table_id = {duckdb_literal(table_id)}").fetchall()
    return sum(int(con.execute(f"SELECT count(*) FROM {_METADATA}.{duckdb_ident(name)} WHERE end_snapshot IS NULL"
                               ).fetchone()[0]) for (name,) in tables)


def _inlined_deletes(con: duckdb.DuckDBPyConnection, table_id: int) -> set[int]:
    """The data files with deletions inlined in the catalog (a DELETE of a few rows writes no delete file):
    their live rows are not in the catalog's counts."""
    try:
        rows = con.execute(f"SELECT DISTINCT file_id FROM {_METADATA}.{duckdb_ident(f'ducklake_inlined_delete_{table_id}')}"
                           ).fetchall()
    except duckdb.CatalogException:
        return set()  # no deletion was ever inlined
    return {int(file_id) for (file_id,) in rows}


def lake_day_counts(con: duckdb.DuckDBPyConnection, team_id: int, first: dt.date, last: dt.date) -> LakeCounts:
    """The lake's rows per UTC day of the team in [first, last], from DuckLake's per-file statistics; the
    days of files the statistics cannot attribute to one day of this team are counted over the table."""
    out = LakeCounts()
    table_id = _table_id(con)
    if table_id is None:
        out.reason = "no events table"
        return out
    if _inlined_rows(con, table_id):
        out.reason = "rows inlined in the catalog"
        return _scanned(con, out, team_id, _days(first, last))
    partly_deleted = _inlined_deletes(con, table_id)
    unattributed: set[dt.date] = set()
    files = con.execute(_FILES_SQL.format(meta=_METADATA, table_id=duckdb_literal(table_id),
                                          day=duckdb_literal(EVENTS.day_column))).fetchall()
    for file_id, rows, team_min, team_max, day_min, day_max in files:
        if team_min is not None and team_max is not None and not team_min <= team_id <= team_max:
            continue  # another team's file
        if day_min is None or day_max is None or team_min != team_id or team_max != team_id:
            out.reason = "a file without usable statistics"
            return _scanned(con, out, team_id, _days(first, last))
        if day_max < first or day_min > last:
            continue
        if day_min != day_max or file_id in partly_deleted:
            out.reason = "files spanning several days" if day_min != day_max else "deletions inlined in the catalog"
            unattributed.update(_days(max(day_min, first), min(day_max, last)))
            continue
        out.files_by_stats += 1
        if rows:
            out.days[day_min] = out.days.get(day_min, 0) + int(rows)
    return _scanned(con, out, team_id, sorted(unattributed)) if unattributed else out


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _runs_of_days(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Sorted days as runs of consecutive days (first, last)."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if runs and day == runs[-1][1] + dt.timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _scanned(con: duckdb.DuckDBPyConnection, out: LakeCounts, team_id: int, days: list[dt.date]) -> LakeCounts:
    """Count ``days`` over the lake table (their statistics-attributed rows replaced)."""
    from airflow_provider_duckling.transfer.lake import qualified

    wanted = set(days)
    out.days = {d: n for d, n in out.days.items() if d not in wanted}
    out.days_scanned = len(wanted)
    col = duckdb_ident(EVENTS.day_column)
    for first, last in _runs_of_days(sorted(wanted)):
        start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        rows = con.execute(
            f"SELECT CAST(timezone('UTC', {col}) AS DATE) AS d, count(*) FROM {qualified(EVENTS)} "
            f"WHERE team_id = {duckdb_literal(team_id)} AND {col} >= {duckdb_literal(start)} "
            f"AND {col} < {duckdb_literal(end)} GROUP BY d").fetchall()
        out.days.update({d: int(n) for d, n in rows})
    return out


# ---------------------------------------------------------------- deciding


@dataclass(frozen=True)
class DayCount:
    """One team-day's events on both sides."""

    team_id: int
    day: dt.date
    clickhouse: int
    lake: int

    @property
    def key(self) -> str:
        return f"{self.team_id}_{self.day.isoformat()}"

    def as_dict(self) -> dict[str, Any]:
        return {"team_id": self.team_id, "day": self.day.isoformat(), "clickhouse_rows": self.clickhouse,
                "lake_rows": self.lake}


@dataclass
class HistoryFindings:
    """What one pass compared, found and re-moves."""

    week: str = ""
    last_week: str = ""
    teams: int = 0
    days_compared: int = 0
    differing: list[DayCount] = field(default_factory=list)
    reruns: list[DayCount] = field(default_factory=list)
    already_rerun: list[DayCount] = field(default_factory=list)
    deferred: list[DayCount] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    lake_days_scanned: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"week": self.week, "teams": self.teams, "days_compared": self.days_compared,
                "differing": [c.as_dict() for c in self.differing], "reruns": [c.as_dict() for c in self.reruns],
                "already_rerun": [c.as_dict() for c in self.already_rerun],
                "deferred": [c.as_dict() for c in self.deferred], "skipped": self.skipped,
                "lake_days_scanned": self.lake_days_scanned}

    def summary(self) -> str:
        return (f"event=history_check teams={self.teams} days_compared={self.days_compared} "
                f"differing={len(self.differing)} reruns={len(self.reruns)} skipped={len(self.skipped)}")


def week_of(now: dt.datetime) -> str:
    """The pass's ISO week (``2024W07``): one re-move of a day per week."""
    year, week, _ = now.astimezone(dt.UTC).isocalendar()
    return f"{year}W{week:02d}"


def run_id_for(team_id: int, day: dt.date, week: str) -> str:
    return f"{RUN_PREFIX}{team_id}_{day.isoformat()}__{week}"


def compare_team(duckling: Duckling, first: dt.date, last: dt.date, hook: Any) -> tuple[list[DayCount], LakeCounts]:
    """Every day in [first, last] on which either side holds a row of the team, both counts."""
    from airflow_provider_duckling.health.tallies import attached
    from airflow_provider_duckling.transfer.lake import table_exists

    source = source_day_counts(hook, duckling.team_id, first, last)
    with attached(duckling) as con:
        lake = (lake_day_counts(con, duckling.team_id, first, last)
                if con is not None and table_exists(con, EVENTS) else LakeCounts(reason="no events table yet"))
    days = sorted(set(source) | set(lake.days))
    return [DayCount(duckling.team_id, d, source.get(d, 0), lake.days.get(d, 0)) for d in days], lake


def batch_start(day: dt.date, start: dt.date, daily_from: dt.date, months: int) -> dt.date:
    """The first day of the scheduled run that moves ``day``: the day itself from ``daily_from`` on, else its
    calendar block of ``months`` months, clipped to the team's start (:mod:`~airflow_provider_duckling.domain.history`)."""
    if day >= daily_from:
        return day
    block = day.replace(month=(day.month - 1) // months * months + 1, day=1)
    return max(block, start)


@dataclass(frozen=True)
class TeamPlan:
    """What the pass needs to know of a team beyond its duckling."""

    start: dt.date
    daily_from: dt.date
    months: int


def _unmoved(dag_id: str, team_id: int, empty: list[DayCount], plan: TeamPlan) -> set[dt.date]:
    """Of differing days the lake holds nothing of, those whose scheduled run (the day's, or its history
    batch's) has not succeeded: catch-up has not moved them yet."""
    from airflow_provider_duckling.health.freshness import run_summary

    if not empty:
        return set()
    starts = {c.day: batch_start(c.day, plan.start, plan.daily_from, plan.months) for c in empty}
    succeeded = run_summary(dag_id, sorted(set(starts.values())), team_id).succeeded
    return {day for day, begin in starts.items() if begin not in succeeded}


def _busy(dag_id: str, team_id: int, days: list[dt.date], plan: TeamPlan, last_week: str) -> set[dt.date]:
    """Days whose own run, history batch's run or last week's re-move is still going."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_provider_duckling.health.freshness import run_summary, summarize_runs

    if not days:
        return set()
    starts = {d: batch_start(d, plan.start, plan.daily_from, plan.months) for d in days}
    asked = sorted(set(days) | set(starts.values()))
    unfinished = run_summary(dag_id, asked, team_id, held=max(asked)).unfinished
    earlier = {run_id_for(team_id, d, last_week): d for d in days}
    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=list(earlier))
    unfinished |= summarize_runs({earlier[r]: [tasks] for r, tasks in states.items() if r in earlier}).unfinished
    return {d for d in days if d in unfinished or starts[d] in unfinished}


def _existing_runs(dag_id: str, run_ids: list[str]) -> set[str]:
    """Which of ``run_ids`` the team's DAG already has (Execution API)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    if not run_ids:
        return set()
    return set(RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=run_ids))


def check_team(duckling: Duckling, plan: TeamPlan, last: dt.date, max_days: int, hook: Any,
               findings: HistoryFindings) -> None:
    """Compare one team's history [plan.start, last]; add its differing days and re-moves to ``findings``."""
    from airflow_provider_duckling.domain.partitions import dag_id_for

    team = duckling.team_id
    compared, lake = compare_team(duckling, plan.start, last, hook)
    findings.teams += 1
    findings.days_compared += (last - plan.start).days + 1
    findings.lake_days_scanned += lake.days_scanned
    if lake.days_scanned:
        log.info("event=history_check_lake_scan team=%d days=%d reason=%s", team, lake.days_scanned, lake.reason)
    differing = [c for c in compared if c.clickhouse != c.lake]
    if not differing:
        return
    dag_id = dag_id_for("events", team)
    unmoved = _unmoved(dag_id, team, [c for c in differing if c.lake == 0], plan)
    if unmoved:
        findings.skipped.append(f"team {team} events: {len(unmoved)} day(s) not moved yet, "
                                f"{min(unmoved)}..{max(unmoved)}")
    differing = [c for c in differing if c.day not in unmoved]
    findings.differing.extend(differing)
    for item in differing:
        log.warning("event=history_check_differs team %d events %s: clickhouse %d rows, lake %d rows",
                    team, item.day, item.clickhouse, item.lake)
    _plan_reruns(duckling, plan, dag_id, sorted(differing, key=lambda c: c.day, reverse=True), max_days, findings)


def _plan_reruns(duckling: Duckling, plan: TeamPlan, dag_id: str, newest_first: list[DayCount], max_days: int,
                 findings: HistoryFindings) -> None:
    """Up to ``max_days`` re-moves, newest first: days already re-moved this week and days still running are
    left; the rest waits for the next pass."""
    team, week = duckling.team_id, findings.week
    if not newest_first:
        return
    existing = _existing_runs(dag_id, [run_id_for(team, c.day, week) for c in newest_first])
    done = [c for c in newest_first if run_id_for(team, c.day, week) in existing]
    findings.already_rerun.extend(done)
    candidates = [c for c in newest_first if c not in done]
    if not candidates:
        return
    if dag_paused(dag_id, "history_check"):
        findings.skipped.append(f"team {team} events: DAG paused, {len(candidates)} differing day(s) not re-moved")
        return
    now, rest = candidates[:max_days], candidates[max_days:]
    busy = _busy(dag_id, team, [c.day for c in now], plan, findings.last_week)
    if busy:
        findings.skipped.append(f"team {team} events: runs still going for "
                                + ", ".join(d.isoformat() for d in sorted(busy)))
    findings.reruns.extend(c for c in now if c.day not in busy)
    if rest:
        findings.deferred.extend(rest)
        log.info("event=history_check_deferred team=%d days=%d max_days=%d newest=%s oldest=%s: left for the next pass",
                 team, len(rest), max_days, rest[0].day, rest[-1].day)


def history_check(ducklings: dict[int, Duckling], plans: dict[int, TeamPlan], last: dt.date, now: dt.datetime,
                  max_days: int) -> HistoryFindings:
    """One pass over every unpaused duckling's events history up to ``last``."""
    from airflow_provider_duckling.common.redaction import scrubbed_message
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

    hook = ClickHouseHook()
    findings = HistoryFindings(week=week_of(now), last_week=week_of(now - dt.timedelta(days=7)))
    for duckling in sorted(ducklings.values(), key=lambda d: d.team_id):
        plan = plans.get(duckling.team_id)
        if duckling.paused:
            findings.skipped.append(f"team {duckling.team_id}: paused")
        elif plan is None:
            findings.skipped.append(f"team {duckling.team_id}: no events start date yet")
        elif plan.start <= last:
            try:
                check_team(duckling, plan, last, max_days, hook, findings)
            except Exception as exc:  # noqa: BLE001 - one unreadable lake or team must not hide the others
                findings.skipped.append(f"team {duckling.team_id} events: cannot compare: {scrubbed_message(exc)}")
    return findings


def team_plans(inputs: Any, today: dt.date) -> dict[int, TeamPlan]:
    """Each duckling's events start (its ``start_date`` or the discovered one, not before the floor) and the
    timetable that cut its history into runs (the team DAG's daily-from day: ``topup_days`` before discovery
    first saw the duckling, or before today while it has not)."""
    from airflow_provider_duckling.domain.history import daily_from
    from airflow_provider_duckling.registry import settings

    floor, topup, months = settings.start_date_floor(), settings.topup_days(), settings.history_batch_months()
    plans: dict[int, TeamPlan] = {}
    for team, duckling in inputs.ducklings.items():
        start = duckling.start_date or inputs.start_dates.get("events", {}).get(team)
        if start is not None:
            seen = inputs.first_seen.get(team)
            plans[team] = TeamPlan(max(start, floor), daily_from(seen.astimezone(dt.UTC).date() if seen else today, topup),
                                   months)
    return plans


def trigger_arguments(reruns: list[DayCount], week: str) -> list[dict[str, Any]]:
    """TriggerDagRunOperator arguments of the re-moves (one run id per team, day and week)."""
    from airflow_provider_duckling.domain.partitions import dag_id_for

    return [{"trigger_dag_id": dag_id_for("events", c.team_id), "trigger_run_id": run_id_for(c.team_id, c.day, week),
             "conf": {"partition_key": c.key}} for c in reruns]
