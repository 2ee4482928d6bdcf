"""How fresh each team's tables are: the newest day held, how many days that is behind the last closed day,
and which recent days failed.

The newest day held is the latest of: the newest day the lake holds rows for, the newest day whose run
succeeded (a day without data registers no rows, and is still done), and for persons the last day the
team's full export covers. Failed days are days of the last ``[duckling] retry_lookback_days`` whose
scheduled, catch-up or top-up run failed and that no run of the same day (a later pass, a repair) has
since completed. Run states come from the Execution API (a worker may not read the metadata DB), the lake
is attached read-only.

A new duckling holds nothing until its first top-up has run, so its tables are *onboarding* for ``[duckling]
onboarding_grace_hours`` after discovery first saw it (:attr:`DiscoveryState.first_seen
<airflow_provider_duckling.registry.state.DiscoveryState.first_seen>`), and for as long as no discovery pass
has seen it yet: measured and reported, never judged lagging. A run that fails meanwhile is reported by its own
task's failure callback; the check does not report it a second time.

The computation (:func:`onboarding_until`, :func:`table_freshness`, :func:`summarize_runs`, :func:`lagging`)
is pure; :func:`collect` reads the lakes and Airflow (two Execution API calls per DAG, plus one per day of the
look-back that could change the answer).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_duckling.registry.catalog import Duckling

log = logging.getLogger(__name__)

TABLES = ("events", "persons")
#: The provider's own re-runs of a day (later pass, reconciliation) name it in their run id; Airflow's
#: scheduled and catch-up runs are found by their logical date (their ids name the run_after instead).
_KEYED_RUN = re.compile(r"^(?:later_pass|reconcile)__\d+_(\d{4}-\d{2}-\d{2})$", re.ASCII)
_DONE = frozenset({"success", "skipped"})
_FAILED = frozenset({"failed", "upstream_failed"})


@dataclass(frozen=True)
class TableFreshness:
    """One team's table: the newest day it holds and how far that is behind."""

    team_id: int
    table: str
    start: dt.date | None
    last_closed: dt.date
    latest_day: dt.date | None
    failed_days: tuple[dt.date, ...] = ()
    grace_until: dt.datetime | None = None
    """Set while the duckling is onboarding: when its grace ends (UTC); until then the table is not judged."""
    first_seen: dt.datetime | None = None
    """When discovery first saw the duckling (``None``: not yet, which an onboarding message says)."""

    @property
    def onboarding(self) -> bool:
        """Whether the table is within its duckling's onboarding grace (measured, never lagging)."""
        return self.grace_until is not None

    @property
    def lag_days(self) -> int | None:
        """Closed days not held yet (0 = up to date); ``None`` while the start date is unknown."""
        if self.start is None:
            return None
        held = self.latest_day if self.latest_day is not None else self.start - dt.timedelta(days=1)
        return max((self.last_closed - max(held, self.start - dt.timedelta(days=1))).days, 0)

    def as_dict(self) -> dict[str, Any]:
        return {"team_id": self.team_id, "table": self.table,
                "latest_day": self.latest_day.isoformat() if self.latest_day else None,
                "lag_days": self.lag_days, "failed_days": [d.isoformat() for d in self.failed_days],
                "grace_until": self.grace_until.isoformat(timespec="minutes") if self.grace_until else None,
                "first_seen": self.first_seen.isoformat(timespec="minutes") if self.first_seen else None}


@dataclass
class RunSummary:
    """Days of one DAG by what their runs did."""

    succeeded: set[dt.date] = field(default_factory=set)
    failed: set[dt.date] = field(default_factory=set)
    unfinished: set[dt.date] = field(default_factory=set)


def last_closed_day(now: dt.datetime, settle: dt.timedelta) -> dt.date:
    """The newest UTC day that has ended and settled by ``now`` (its top-up may have run)."""
    return (now.astimezone(dt.UTC) - settle).date() - dt.timedelta(days=1)


def keyed_run_day(run_id: str) -> dt.date | None:
    """The day a later-pass or repair run id names, or None."""
    match = _KEYED_RUN.match(run_id)
    if not match:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def summarize_runs(runs_by_day: dict[dt.date, list[dict[str, Any]]]) -> RunSummary:
    """Each day's runs (their ``{task_id: state}``) → succeeded, failed, unfinished days.

    A day failed when one of its runs failed and none completed; a run completed when every task succeeded
    or was skipped (a persons day the full export covers skips)."""
    summary = RunSummary()
    failed: set[dt.date] = set()
    for day, runs in runs_by_day.items():
        for tasks in runs:
            states = {getattr(s, "value", s) for s in tasks.values()}
            if not states:
                continue
            if states <= _DONE:
                summary.succeeded.add(day)
            elif states & _FAILED:
                failed.add(day)
            else:
                summary.unfinished.add(day)
    summary.failed = failed - summary.succeeded
    return summary


def baseline_day(comment: str | None, settle: dt.timedelta) -> dt.date | None:
    """The last day a team's persons full export covers, from the persons table's comment."""
    from airflow_provider_duckling.domain.persons import baseline_time

    baseline = baseline_time(comment)
    return None if baseline is None else (baseline - settle).date() - dt.timedelta(days=1)


def onboarding_until(first_seen: dt.datetime | None, now: dt.datetime, grace: dt.timedelta) -> dt.datetime | None:
    """When a duckling's onboarding grace ends, or ``None`` once it has ended (or the grace is 0).

    Its first top-up cannot have run before discovery saw it, so the grace counts from ``first_seen``; a
    duckling no discovery pass has seen yet (``None``) is newer still: its grace has not even started, and
    ends no sooner than ``now + grace``.

    :param first_seen: when discovery first found the duckling in the registry, or ``None``
    :param now: the time of the check
    :param grace: ``[duckling] onboarding_grace_hours``
    """
    if grace <= dt.timedelta(0):
        return None
    end = (now if first_seen is None else first_seen) + grace
    return end.astimezone(dt.UTC) if now < end else None


def table_freshness(
    team_id: int, table: str, start: dt.date | None, last_closed: dt.date, held: Iterable[dt.date | None],
    failed: Iterable[dt.date] = (), grace_until: dt.datetime | None = None, first_seen: dt.datetime | None = None,
) -> TableFreshness:
    """Combine what is known to be held (lake days, successful runs, the full export) into one answer.

    :param grace_until: from :func:`onboarding_until`: set while the duckling is onboarding
    :param first_seen: when discovery first saw the duckling, if it has
    """
    days = [d for d in held if d is not None and d <= last_closed]
    return TableFreshness(team_id, table, start, last_closed, max(days, default=None), tuple(sorted(failed)),
                          grace_until, first_seen)


def lagging(report: Iterable[TableFreshness], max_lag_days: int) -> list[TableFreshness]:
    """The tables more than ``max_lag_days`` behind (tables whose start date is unknown, and tables of an
    onboarding duckling, are not judged)."""
    return [f for f in report if not f.onboarding and f.lag_days is not None and f.lag_days > max_lag_days]


def onboarding(report: Iterable[TableFreshness]) -> list[TableFreshness]:
    """The tables within their duckling's onboarding grace."""
    return [f for f in report if f.onboarding]


def describe(item: TableFreshness) -> str:
    """One line per lagging (or onboarding) table, for the check's message."""
    held = item.latest_day.isoformat() if item.latest_day else "nothing"
    failed = f", {len(item.failed_days)} failed day(s)" if item.failed_days else ""
    if item.grace_until is not None:
        until = item.grace_until.strftime("%Y-%m-%d %H:%M UTC")
        if item.first_seen is None:  # discovery has not run since it was added: the grace has not started
            until = f"at least {until}, not seen by discovery yet"
        return f"team {item.team_id} {item.table}: onboarding (grace until {until}; holds {held}{failed})"
    return f"team {item.team_id} {item.table}: {item.lag_days} day(s) behind {item.last_closed} (holds {held}{failed})"


# ---------------------------------------------------------------- reading the lakes and Airflow


def lake_latest_days(duckling: Duckling, last_closed: dt.date, settle: dt.timedelta) -> dict[str, list[dt.date | None]]:
    """Per table, what the lake says is held: the newest day with rows (up to ``last_closed``), and for
    persons the last day the full export covers. Read-only; a never-used lake holds nothing."""
    from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal
    from airflow_provider_duckling.domain.tables import PERSONS, get_table
    from airflow_provider_duckling.health.tallies import attached
    from airflow_provider_duckling.transfer.lake import qualified, table_comment, table_exists

    out: dict[str, list[dt.date | None]] = {t: [] for t in TABLES}
    end = dt.datetime.combine(last_closed + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    with attached(duckling) as con:
        if con is None:
            return out
        for name in TABLES:
            table = get_table(name)
            if not table_exists(con, table):
                continue
            day = duckdb_ident(table.day_column)
            (newest,) = con.execute(
                f"SELECT CAST(max({day}) AS DATE) FROM {qualified(table)} "
                f"WHERE team_id = {duckdb_literal(duckling.team_id)} AND {day} < {duckdb_literal(end)}"
            ).fetchone()
            out[name].append(newest)
            if name == PERSONS.name:
                out[name].append(baseline_day(table_comment(con, table), settle))
    return out


def run_summary(dag_id: str, days: list[dt.date], team_id: int, held: dt.date | None = None) -> RunSummary:
    """What the runs of ``days`` did, from the Execution API: the runs at each day's midnight logical date
    (scheduled, catch-up, top-up) and the provider's keyed re-runs of it (later pass, reconciliation).

    One call covers every day; days are asked one by one only where it matters: all of them when a run
    failed or is unfinished, else only the days after ``held`` (the newest day already known to be held)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    if not days:
        return RunSummary()
    runs: dict[dt.date, list[dict[str, Any]]] = {d: [] for d in days}
    midnight = {d: dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC) for d in days}
    together = RuntimeTaskInstance.get_task_states(dag_id=dag_id, logical_dates=list(midnight.values()))
    all_done = all({getattr(s, "value", s) for s in tasks.values()} <= _DONE for tasks in together.values())
    for day, logical_date in midnight.items() if together else ():
        if all_done and held is not None and day <= held:
            continue  # completed, and no newer than what is known to be held: changes nothing
        runs[day].extend(RuntimeTaskInstance.get_task_states(dag_id=dag_id, logical_dates=[logical_date]).values())
    keyed = [f"{kind}__{team_id}_{d.isoformat()}" for d in days for kind in ("later_pass", "reconcile")]
    for run_id, tasks in RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=keyed).items():
        day = keyed_run_day(run_id)
        if day in runs:
            runs[day].append(tasks)
    return summarize_runs(runs)


def collect(ducklings: dict[int, Duckling], start_dates: dict[str, dict[int, dt.date]], now: dt.datetime,
            first_seen: dict[int, dt.datetime]) -> tuple[list[TableFreshness], list[str]]:
    """Every team and table's freshness, and one line per lake that could not be read (its tables are then
    judged from their runs alone).

    :param ducklings: the registry
    :param start_dates: the discovered start dates (table → team → day)
    :param now: the time of the check
    :param first_seen: when discovery first saw each duckling (a team missing from it is onboarding, so
        it is required: an empty mapping means every duckling is new)
    """
    from airflow_provider_duckling.common.redaction import scrubbed_message
    from airflow_provider_duckling.domain.partitions import dag_id_for
    from airflow_provider_duckling.registry import settings

    settle = settings.settle_delay()
    last = last_closed_day(now, settle)
    lookback = [last - dt.timedelta(days=n) for n in range(settings.retry_lookback_days())]
    floor = settings.start_date_floor()
    grace = settings.onboarding_grace()
    report: list[TableFreshness] = []
    problems: list[str] = []
    for duckling in sorted(ducklings.values(), key=lambda d: d.team_id):
        try:
            lake = lake_latest_days(duckling, last, settle)
        except Exception as exc:  # noqa: BLE001 - one unreadable lake must not hide the others
            problems.append(f"team {duckling.team_id}: cannot read the lake: {scrubbed_message(exc)}")
            lake = {t: [] for t in TABLES}
        seen_at = first_seen.get(duckling.team_id)
        grace_until = onboarding_until(seen_at, now, grace)
        for table in TABLES:
            start = duckling.start_date or start_dates.get(table, {}).get(duckling.team_id)
            start = max(start, floor) if start else None
            days = [d for d in lookback if start is not None and d >= start]
            in_lake = max((d for d in lake[table] if d is not None), default=None)
            runs = run_summary(dag_id_for(table, duckling.team_id), days, duckling.team_id, in_lake)
            held = [*lake[table], max(runs.succeeded, default=None)]
            report.append(table_freshness(duckling.team_id, table, start, last, held, runs.failed, grace_until,
                                          seen_at))
    return report, problems
