"""Self-healing reconciliation: compare each team's last closed days, ClickHouse against the lake, and
re-run the days that differ.

The comparison is ``duckling verify``'s (:mod:`airflow_provider_duckling.health.tallies`), per UTC day:

* events: the export's own SELECT for the day against the lake's rows of the day — rows, Σ epoch µs of
  ``timestamp``, Σ bytes of ``distinct_id``;
* persons: each distinct_id counts on the day of its **latest** change, with its current answer — on
  ClickHouse the latest versions (which merges never remove; an as-of-day answer of a past day reads a
  merged-away version as absent), in the lake the distinct_id's latest row — rows, Σ of an MD5 digest of
  each answer (distinct_id, person id, properties, version; a tombstone's NULLs read as empty), Σ bytes of
  ``distinct_id``. So a distinct_id mapped to the wrong person, or stale properties, differ. Distinct_ids
  changed after the window are left out on both sides (the lake cannot hold that change yet), and days are
  compared oldest first only while each is moved. Days the team's full export covers hold no top-up
  (their rows are the full export's) and are not compared.

A differing day is re-run once: a run of the team's DAG with ``conf = {"partition_key": …}`` and the fixed
run id ``reconcile__{team}_{day}``, so a later pass never starts it again; a day that still differs after
its repair run is reported as unresolved. Paused ducklings are skipped, and so are days whose runs are
still going and days not moved yet (nothing in the lake, no successful run: catch-up's and the later pass's).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from itertools import takewhile
from typing import Any

from airflow_provider_duckling.common.quoting import duckdb_literal
from airflow_provider_duckling.health.tallies import (
    EVENTS_TERM,
    PERSON_DIGEST,
    PERSONS_TERM,
    Tally,
    attached,
    clickhouse_tally,
    day_tallies,
)
from airflow_provider_duckling.registry.catalog import Duckling

log = logging.getLogger(__name__)

EMPTY = Tally(0, (0, 0))
RUN_PREFIX = "reconcile__"


@dataclass(frozen=True)
class DayComparison:
    """One team-day of one table on both sides."""

    team_id: int
    table: str
    day: dt.date
    source: Tally
    lake: Tally

    @property
    def matches(self) -> bool:
        return self.source == self.lake

    @property
    def key(self) -> str:
        return f"{self.team_id}_{self.day.isoformat()}"

    def describe(self) -> str:
        if self.lake.unreadable:
            return (f"team {self.team_id} {self.table} {self.day}: clickhouse {self.source.rows} rows, "
                    f"lake {self.lake.rows} rows its reader cannot decode ({self.lake.unreadable})")
        what = "rows" if self.source.rows != self.lake.rows else "checksum"
        return (f"team {self.team_id} {self.table} {self.day}: clickhouse {self.source.rows} rows, "
                f"lake {self.lake.rows} rows ({what} differ)")

    def as_dict(self) -> dict[str, Any]:
        return {"team_id": self.team_id, "table": self.table, "day": self.day.isoformat(),
                "clickhouse_rows": self.source.rows, "lake_rows": self.lake.rows, "matches": self.matches}


def run_id_for(team_id: int, day: dt.date) -> str:
    """The repair run's fixed id: one repair per team, table (DAG) and day."""
    return f"{RUN_PREFIX}{team_id}_{day.isoformat()}"


def window(last_closed: dt.date, days: int) -> list[dt.date]:
    """The last ``days`` closed days, oldest first."""
    return [last_closed - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]


# ---------------------------------------------------------------- events


def compare_events(duckling: Duckling, days: list[dt.date], hook: Any) -> list[DayComparison]:
    """Events per day: the export's SELECT on ClickHouse against the lake (one read-only query)."""
    from airflow_provider_duckling.domain.tables import EVENTS, export_select

    if not days:
        return []
    lake = day_tallies(duckling, min(days), max(days))
    select_sql = export_select(EVENTS, hook.database, daily=True)
    return [
        DayComparison(duckling.team_id, "events", day,
                      clickhouse_tally(hook, select_sql, EVENTS_TERM, {"team_id": duckling.team_id, "day": day}),
                      lake.get(day, EMPTY))
        for day in days
    ]


# ---------------------------------------------------------------- persons

#: The answer's columns with a tombstone's NULLs as empty values, named as the digests expect.
_CLICKHOUSE_ANSWER = ("SELECT distinct_id, ifNull(id, '') AS id, ifNull(properties, '') AS properties, "
                      "ifNull(person_version, toUInt64(0)) AS person_version, _timestamp FROM ({select})")
#: Per day of each distinct_id's latest change: rows and digests of the changes in [since, until), and one
#: row per distinct_id whose latest change is later (``later_id``: the lake cannot hold that change yet).
_CLICKHOUSE_DAYS = (
    "SELECT _timestamp >= toDateTime64({{until:Date}}, 6, 'UTC') AS is_later, if(is_later, distinct_id, NULL) "
    "AS later_id, toDate(_timestamp) AS day, count(), toString(sum(toInt128({term}))), "
    "toString(sum(toInt128(length(distinct_id)))) FROM ({answer}) "
    "WHERE _timestamp >= toDateTime64({{since:Date}}, 6, 'UTC') GROUP BY is_later, later_id, day"
)
#: The lake's latest row of each distinct_id among its rows of [start, end), tombstones included.
_LAKE_LATEST = (
    "SELECT distinct_id, coalesce(id, '') AS id, coalesce(properties, '') AS properties, "
    "coalesce(person_version, 0) AS person_version, CAST(_timestamp AS DATE) AS day FROM ("
    "SELECT *, row_number() OVER (PARTITION BY distinct_id {order}) AS _rank FROM {table} "
    "WHERE team_id = {team} AND _timestamp >= {start} AND _timestamp < {end}) WHERE _rank = 1"
)
_LATER_IDS = "duckling_reconcile_later_ids"


def source_persons_days(hook: Any, team_id: int, first: dt.date, last: dt.date) -> tuple[dict[dt.date, Tally], list[str]]:
    """ClickHouse's **current** answer of each distinct_id changed since ``first``, tallied by the day of its
    latest change in [first, last]; and the distinct_ids whose latest change is after ``last``.

    Only latest versions count, so merges (which drop superseded versions of the ReplacingMergeTrees) cannot
    change the answer; an as-of-day answer of a past day can (an old version merged away reads as absent).
    Cost, as the day's export: the keys changed since ``first`` (primary-key reads), plus one filter over the
    team's ``_timestamp`` column that grows with the team (P8: 1.66× for 100× the persons)."""
    from airflow_provider_duckling.domain.persons import changed_since_source
    from airflow_provider_duckling.domain.tables import PERSONS

    select = f"SELECT\n    {PERSONS.select_list()}\n{changed_since_source(hook.database)}"
    sql = _CLICKHOUSE_DAYS.format(term=PERSONS_TERM, answer=_CLICKHOUSE_ANSWER.format(select=select))
    rows = hook.query_rows(sql, {"team_id": team_id, "since": first, "until": last + dt.timedelta(days=1)})
    tallies: dict[dt.date, Tally] = {}
    later: list[str] = []
    for is_later, later_id, day, n, digests, ids in rows:
        if is_later:
            later.append(later_id)
        else:
            tallies[day] = Tally(int(n), (int(digests), int(ids)))
    return tallies, later


def lake_raw_persons_days(con: Any, team_id: int, first: dt.date, last: dt.date) -> set[dt.date]:
    """The days in [first, last] holding any persons row of the team (superseded or not)."""
    from airflow_provider_duckling.domain.tables import PERSONS
    from airflow_provider_duckling.transfer.lake import qualified

    start, end = _bounds(first, last)
    return {d for (d,) in con.execute(
        f"SELECT DISTINCT CAST(_timestamp AS DATE) FROM {qualified(PERSONS)} WHERE team_id = {duckdb_literal(team_id)} "
        f"AND _timestamp >= {duckdb_literal(start)} AND _timestamp < {duckdb_literal(end)}").fetchall()}


def lake_latest_persons_days(con: Any, team_id: int, first: dt.date, last: dt.date, later: list[str]) -> dict[dt.date, Tally]:
    """Per day in [first, last], the lake's rows that are their distinct_id's latest row there, leaving out the
    distinct_ids ClickHouse changed after ``last`` (their rows here are rightly superseded)."""
    import pyarrow as pa

    from airflow_provider_duckling.domain.tables import PERSONS
    from airflow_provider_duckling.transfer.lake import PERSONS_LATEST_FIRST, qualified

    start, end = _bounds(first, last)
    con.register(_LATER_IDS, pa.table({"distinct_id": pa.array(later, pa.string())}))
    try:
        latest = _LAKE_LATEST.format(order=PERSONS_LATEST_FIRST, table=qualified(PERSONS),
                                     team=duckdb_literal(team_id), start=duckdb_literal(start), end=duckdb_literal(end))
        rows = con.execute(
            f"SELECT day, count(*), CAST(sum({PERSON_DIGEST}) AS VARCHAR), CAST(sum(strlen(distinct_id)) AS VARCHAR) "
            f"FROM ({latest}) WHERE distinct_id NOT IN (SELECT distinct_id FROM {_LATER_IDS}) GROUP BY day"
        ).fetchall()
    finally:
        con.unregister(_LATER_IDS)
    return {d: Tally(int(n), (int(a or 0), int(b or 0))) for d, n, a, b in rows}


def _bounds(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    return start, dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def compare_persons(duckling: Duckling, days: list[dt.date], hook: Any, settle: dt.timedelta,
                    moved_by_runs: Callable[[list[dt.date]], set[dt.date]] | None = None,
                    ) -> tuple[list[DayComparison], list[dt.date]]:
    """Persons per day, for the days after the team's full export (before it there is no top-up to compare;
    without a full export the team's next persons run writes one by itself).

    Each distinct_id counts on the day of its latest change, on both sides: ClickHouse's current answer
    against the lake's latest row. So the days are compared oldest first and only while each is moved
    (rows in the lake, or a successful run: ``moved_by_runs`` answers for the days without rows; without it
    every day counts as moved): a change the lake does not hold yet would make an earlier day look stale.
    Returns the comparisons and the days left for a later pass (``days`` must be consecutive)."""
    from airflow_provider_duckling.domain.persons import baseline_time, covered_by_baseline
    from airflow_provider_duckling.domain.tables import PERSONS
    from airflow_provider_duckling.transfer.lake import table_comment, table_exists

    with attached(duckling) as con:
        if con is None or not table_exists(con, PERSONS):
            return [], []
        baseline = baseline_time(table_comment(con, PERSONS))
        if baseline is None:
            return [], []
        days = sorted(d for d in days if not covered_by_baseline(d, baseline, settle))
        if not days:
            return [], []
        held = lake_raw_persons_days(con, duckling.team_id, days[0], days[-1])
        empty = [d for d in days if d not in held]
        moved = set(days) if moved_by_runs is None else held | (moved_by_runs(empty) if empty else set())
        comparable = list(takewhile(lambda d: d in moved, days))
        if not comparable:
            return [], days
        first, last = comparable[0], comparable[-1]
        source, later = source_persons_days(hook, duckling.team_id, first, last)
        lake = lake_latest_persons_days(con, duckling.team_id, first, last, later)
    comparisons = [DayComparison(duckling.team_id, "persons", day, source.get(day, EMPTY), lake.get(day, EMPTY))
                   for day in comparable]
    return comparisons, days[len(comparable):]


# ---------------------------------------------------------------- the pass


@dataclass
class Findings:
    """What one reconciliation pass found, and which repair runs it asks for."""

    compared: list[DayComparison]
    reruns: list[DayComparison]
    unresolved: list[DayComparison]
    fixed: list[DayComparison]
    skipped: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "compared_days": len(self.compared),
            "differing": [c.as_dict() for c in self.compared if not c.matches],
            "reruns": [c.as_dict() for c in self.reruns],
            "unresolved": [c.as_dict() for c in self.unresolved],
            "fixed": [c.as_dict() for c in self.fixed],
            "skipped": self.skipped,
        }


def _repair_states(dag_id: str, team_id: int, days: list[dt.date]) -> dict[dt.date, set[str]]:
    """The task states of each day's repair run, for the days that have one (Execution API)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    by_id = {run_id_for(team_id, d): d for d in days}
    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=list(by_id))
    return {by_id[r]: {str(getattr(s, "value", s)) for s in tasks.values()} for r, tasks in states.items() if r in by_id}


def _busy_days(dag_id: str, days: list[dt.date], team_id: int) -> set[dt.date]:
    from airflow_provider_duckling.health.freshness import run_summary

    # held = the last day: when every run is done, no day needs asking on its own.
    return run_summary(dag_id, days, team_id, held=max(days)).unfinished


def _succeeded_days(dag_id: str, days: list[dt.date], team_id: int) -> set[dt.date]:
    from airflow_provider_duckling.health.freshness import run_summary

    return run_summary(dag_id, sorted(set(days)), team_id).succeeded if days else set()


def dag_paused(dag_id: str, check: str = "reconcile") -> bool:
    """Whether the team's DAG is paused in Airflow (or not parsed yet: nothing to trigger); ``check`` names the
    pass in the log line of a DAG it cannot find."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    try:
        return bool(RuntimeTaskInstance.get_dag(dag_id).is_paused)
    except Exception as exc:  # noqa: BLE001 - not parsed yet: nothing to trigger
        log.info("event=%s_skipped dag=%s reason=%s", check, dag_id, type(exc).__name__)
        return True


def reconcile(ducklings: dict[int, Duckling], start_dates: dict[str, dict[int, dt.date]], days: list[dt.date]) -> Findings:
    """Compare ``days`` of every unpaused duckling's events and persons; decide the repair runs."""
    from airflow_provider_duckling.common.redaction import scrubbed_message
    from airflow_provider_duckling.domain.partitions import dag_id_for
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.registry import settings

    hook = ClickHouseHook()
    settle = settings.settle_delay()
    floor = settings.start_date_floor()
    findings = Findings([], [], [], [], [])
    for duckling in sorted(ducklings.values(), key=lambda d: d.team_id):
        if duckling.paused:
            findings.skipped.append(f"team {duckling.team_id}: paused")
            continue
        for table in ("events", "persons"):
            start = duckling.start_date or start_dates.get(table, {}).get(duckling.team_id)
            wanted = [d for d in days if start is not None and d >= max(start, floor)]
            if not wanted:
                continue
            dag_id = dag_id_for(table, duckling.team_id)
            busy = _busy_days(dag_id, wanted, duckling.team_id)
            if busy:
                findings.skipped.append(f"team {duckling.team_id} {table}: runs still going for "
                                        + ", ".join(d.isoformat() for d in sorted(busy)))
            try:
                if table == "events":
                    compared = compare_events(duckling, [d for d in wanted if d not in busy], hook)
                else:
                    # Persons days depend on the later days (a distinct_id counts on its latest change's day):
                    # compared up to the first day still running or not moved yet.
                    before_busy = [d for d in wanted if d < min(busy, default=dt.date.max)]
                    compared, waiting = compare_persons(
                        duckling, before_busy, hook, settle,
                        lambda empty, dag_id=dag_id, team=duckling.team_id: _succeeded_days(dag_id, empty, team))
                    later = sorted({*waiting, *(d for d in wanted if d not in busy and d not in before_busy)})
                    if later:
                        findings.skipped.append(f"team {duckling.team_id} {table}: not compared until an earlier "
                                                "or the same day is moved: " + ", ".join(d.isoformat() for d in later))
            except Exception as exc:  # noqa: BLE001 - one unreadable lake or team must not hide the others
                findings.skipped.append(f"team {duckling.team_id} {table}: cannot compare: {scrubbed_message(exc)}")
                continue
            findings.compared.extend(compared)
            repairs = _repair_states(dag_id, duckling.team_id, [c.day for c in compared])
            differing = [c for c in compared if not c.matches]
            findings.fixed.extend(c for c in compared if c.matches and repairs.get(c.day))
            findings.unresolved.extend(c for c in differing if c.day in repairs)
            new = [c for c in differing if c.day not in repairs]
            if new and table == "events":
                # (Persons days are compared only once moved.) A day the lake holds nothing of and no scheduled, top-up or keyed run moved has not been moved
                # yet (catch-up or a top-up has not reached it, or its runs failed): that is the DAG's and the
                # later pass's to move, not a difference to repair.
                empty = [c.day for c in new if c.lake.rows == 0]
                moved = {c.day for c in new if c.lake.rows > 0} | _succeeded_days(dag_id, empty, duckling.team_id)
                unmoved = sorted(c.day for c in new if c.day not in moved)
                if unmoved:
                    findings.skipped.append(f"team {duckling.team_id} {table}: not moved yet (no successful run) "
                                            + ", ".join(d.isoformat() for d in unmoved))
                new = [c for c in new if c.day in moved]
            if new and dag_paused(dag_id):
                findings.skipped.append(f"team {duckling.team_id} {table}: DAG paused, "
                                        f"{len(new)} differing day(s) not re-run")
                continue
            findings.reruns.extend(new)
    for item in findings.compared:
        if not item.matches:
            log.warning("event=reconcile_differs %s", item.describe())
    return findings


def trigger_arguments(reruns: list[DayComparison]) -> list[dict[str, Any]]:
    """TriggerDagRunOperator arguments of the repair runs (fixed run ids: each day is repaired once)."""
    from airflow_provider_duckling.domain.partitions import dag_id_for

    return [{"trigger_dag_id": dag_id_for(c.table, c.team_id), "trigger_run_id": run_id_for(c.team_id, c.day),
             "conf": {"partition_key": c.key}} for c in reruns]
