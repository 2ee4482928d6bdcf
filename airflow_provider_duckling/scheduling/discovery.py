"""Earliest-date discovery: where each team's history starts in ClickHouse, per table.

Runs in a task (never at DAG-parse time). Pre-1970 timestamps are ignored and dates are clamped to the
configured floor, so one bad event cannot schedule decades of empty runs.

Rediscovery: every ``[duckling] rediscovery_days`` a known team's events start is asked again. Data older
than the remembered start (a late import) moves the start earlier: the DAG file then builds the DAG from the
new start, and, because Airflow's catch-up only ever moves forward from the last scheduled run, the days
between the new and the old start are recorded as a back-fill range. Each discovery pass triggers runs for
the next few of them, a calendar month of days per run (run id
``rediscovered__{team}_{first}_to_{last}``, conf ``partition_key`` = ``{team}_{first}..{last}``; a single day
keeps ``rediscovered__{team}_{day}``; at most :data:`BACKFILL_QUEUE` queued per DAG so that top-ups are not
stuck behind them) until every day has a run.
They have no logical date on purpose: Airflow creates no task for a run dated before the DAG's start date
(an empty, "successful" run), and the DAG may not have been re-parsed with its new start yet.
A ``start_date`` in the registry wins over discovery: such teams are never asked. Teams paused in the
registry are not asked either, and their pending days wait until the pause ends.

Every pass also records when each duckling in the registry was first seen (all of them, paused or with a
registry start date too): that day fixes where the team's history batches end
(:func:`~airflow_provider_duckling.domain.history.daily_from`) and starts its freshness grace period.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_provider_duckling.common.quoting import clickhouse_ident
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.registry.state import (
    DiscoveryState,
    StartDates,
    load_discovery_state,
    save_discovery_state,
)
from airflow_provider_duckling.transfer.export import ROW_SETTINGS, settings_clause

log = logging.getLogger(__name__)

_EARLIEST = {
    # toDate32, not toDate: toDate wraps a row after 2149-06-06 onto a 1970 day (and pre-1970 ones onto 2149).
    "events": ("events", "toDate32(timestamp)", "timestamp >= toDateTime64('1970-01-01 00:00:00', 6, 'UTC')"),
    "persons": ("person", "toDate(_timestamp, 'UTC')", "_timestamp >= toDateTime('1970-01-01 00:00:00', 'UTC')"),
}


def discover_start_dates(clickhouse: ClickHouseHook, team_ids: list[int], floor: dt.date, tables: tuple[str, ...]) -> StartDates:
    """The first day with data per table and team (teams without data are left out)."""
    found: StartDates = {}
    if not team_ids:
        return found
    for table in tables:
        source, day_expr, valid = _EARLIEST[table]
        rows = clickhouse.query_rows(
            f"SELECT team_id, min({day_expr}) FROM {clickhouse_ident(clickhouse.database)}.{clickhouse_ident(source)} "
            f"WHERE team_id IN {{teams:Array(Int64)}} AND {valid} GROUP BY team_id {settings_clause(ROW_SETTINGS)}",
            {"teams": "[" + ",".join(str(int(t)) for t in team_ids) + "]"},
        )
        for team_id, first in rows:
            first = first if isinstance(first, dt.date) else dt.date.fromisoformat(str(first))
            found.setdefault(table, {})[int(team_id)] = max(first, floor)
            log.info("event=start_date_discovered table=%s team=%s first_day=%s start=%s", table, team_id, first,
                     max(first, floor))
    return found


BACKFILL_QUEUE = 8
"""At most this many queued runs per team DAG when back-fill runs of rediscovered days are triggered."""
MAX_CHECKS = 200
"""At most this many runs (a month of days each) of one back-fill range are looked up per pass (one or two
Execution API calls each)."""


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def run_discovery(
    ducklings: dict[int, Duckling], clickhouse: Callable[[], ClickHouseHook], *, now: dt.datetime, floor: dt.date,
    rediscovery_days: int, path: Path | None = None,
) -> DiscoveryState:
    """One discovery pass: find the start of teams that have none, re-check known ones that are due, and
    remember both (and any newly uncovered days to back-fill) in the state file.

    :param clickhouse: makes the hook, only when there is something to ask.
    :param rediscovery_days: re-check a known team's events start when its last check is this many days
        old; 0: never.
    """
    state = load_discovery_state(path)
    today = now.astimezone(dt.UTC).date()
    asked = sorted(t for t, d in ducklings.items() if d.start_date is None and not d.paused)
    changed = state.see(set(ducklings), now)  # fixes each new duckling's history batches and alert grace
    for table in _EARLIEST:
        known = state.start_dates.setdefault(table, {})
        pending = [t for t in asked if t not in known]
        if table == "persons":
            # Persons history is one full export, which the first run writes: the DAG starts at the last
            # closed day when the duckling is first seen, and tops up from there. Nothing to rediscover.
            if pending:
                known.update(dict.fromkeys(pending, max(today - dt.timedelta(days=1), floor)))
                changed = True
            continue
        checked = state.checked.setdefault(table, {})
        due = [t for t in asked if t in known and rediscovery_days
               and (t not in checked or checked[t] + dt.timedelta(days=rediscovery_days) <= today)]
        if not pending and not due:
            continue
        found = discover_start_dates(clickhouse(), pending + due, floor, (table,)).get(table, {})
        changed = True
        for team in pending:
            if team in found:
                known[team], checked[team] = found[team], today
        for team in due:
            checked[team] = today
            new, old = found.get(team), known[team]
            if new is not None and new < old:
                known[team] = new
                first, end = state.add_backfill(table, team, new, old)
                log.warning("event=start_date_moved_earlier table=%s team=%s old=%s new=%s backfill_days=%d "
                            "(data older than the known start appeared; %s to %s will be back-filled)",
                            table, team, old, new, (old - new).days, first, end - dt.timedelta(days=1))
    if changed:
        save_discovery_state(state, path)
    return state


def backfill_triggers(ducklings: dict[int, Duckling], path: Path | None = None, *, per_dag: int = BACKFILL_QUEUE,
                      ) -> list[dict[str, Any]]:
    """TriggerDagRunOperator arguments for the next rediscovered days still without a run, and the state
    file's ranges advanced past the days whose runs exist (so a trigger lost on the way is made again).

    Days the DAG's catch-up will create itself (from its ``next_dagrun`` on) are left to it. A team paused in
    the registry or in Airflow keeps its range for later; a team gone from the registry, or whose registry
    entry now sets ``start_date`` (the operator's start wins), loses it.
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_provider_duckling.domain.history import batch_end
    from airflow_provider_duckling.domain.partitions import dag_id_for, run_id_part

    state = load_discovery_state(path)
    triggers: list[dict[str, Any]] = []
    changed = False
    for table, teams in state.backfill.items():
        for team, (first, end) in sorted(teams.items()):
            duckling = ducklings.get(team)
            if duckling is None or duckling.start_date is not None:  # gone, or the registry now sets the start
                reason = "not_in_registry" if duckling is None else "registry_start_date"
                log.info("event=rediscovered_backfill_dropped table=%s team=%s reason=%s", table, team, reason)
                del teams[team]
                changed = True
                continue
            dag_id = dag_id_for(table, team)
            if duckling.paused:
                continue
            try:
                dag = RuntimeTaskInstance.get_dag(dag_id)
            except Exception as exc:  # not parsed yet: the next pass tries again
                log.info("event=rediscovered_backfill_waiting dag=%s reason=%s", dag_id, type(exc).__name__)
                continue
            if dag.is_paused:
                continue
            stop = end if dag.next_dagrun is None else min(end, dag.next_dagrun.astimezone(dt.UTC).date())
            slots = max(0, per_dag - RuntimeTaskInstance.get_dr_count(dag_id=dag_id, states=["queued"]))
            day, advancing, checks = first, True, 0
            while day < stop and checks < MAX_CHECKS and (slots or advancing):
                checks += 1
                end = batch_end(day, stop)  # a calendar month of the uncovered days per run
                last = end - dt.timedelta(days=1)
                key = f"{team}_{day.isoformat()}" + (f"..{last.isoformat()}" if last > day else "")
                run_id = f"rediscovered__{run_id_part(key)}"
                if (RuntimeTaskInstance.get_dr_count(dag_id=dag_id, run_ids=[run_id])
                        or (last == day and RuntimeTaskInstance.get_dr_count(dag_id=dag_id,
                                                                             logical_dates=[_midnight(day)]))):
                    first = end if advancing else first
                elif slots:
                    log.info("event=rediscovered_backfill dag=%s partition=%s", dag_id, key)
                    triggers.append({"trigger_dag_id": dag_id, "trigger_run_id": run_id, "logical_date": None,
                                     "conf": {"partition_key": key}})
                    slots, advancing = slots - 1, False
                else:
                    break
                day = end
            if first >= stop:
                log.info("event=rediscovered_backfill_done dag=%s every day before %s has a run", dag_id, end)
                del teams[team]
                changed = True
            elif first != teams[team][0]:
                teams[team] = (first, end)
                changed = True
    if changed:
        save_discovery_state(state, path)
    return triggers
