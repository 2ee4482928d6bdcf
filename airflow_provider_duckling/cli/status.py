"""``duckling status [TEAM…]``: how far each duckling has come, and which ones need attention.

With no team: one line per team, worst lag first, under a header with totals (teams, behind, failing) —
readable for thousands of teams, and fast: run states come from one metadata-DB query and rows/bytes from
one query over the registrations' asset events; the lakes are read only with ``--lake`` (one attach per
team, ``--parallel`` at a time). With teams: per team and table, the detail (lakes read unless
``--no-lake``). ``--json`` prints the same figures as one JSON document.

Expected days run from the table's start date (registry, else discovered) to yesterday (UTC). Registered
days are the days the lake holds rows for. Failed and running count days by the state of their latest
Airflow run. A day is covered when the lake holds it or its latest run succeeded (a day without data
registers no rows). Latest and lag are defined in :mod:`airflow_provider_duckling.cli.summary`.
"""

from __future__ import annotations

import argparse
import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console

from airflow_provider_duckling.cli.errors import OK, PROBLEMS
from airflow_provider_duckling.cli.history import DayStates, Moved, asset_name, day_states, registrations
from airflow_provider_duckling.cli.render import coverage_bar, emit_json, progress, table
from airflow_provider_duckling.cli.selection import (
    discovered_dates,
    registry_file,
    select,
    start_for,
    yesterday,
)
from airflow_provider_duckling.cli.summary import (
    TableFigures,
    TeamSummary,
    human_bytes,
    last_closed_day,
    summarise,
    table_figures,
    totals,
    worst_first,
)
from airflow_provider_duckling.common.redaction import scrubbed_message
from airflow_provider_duckling.health.tallies import registered_days
from airflow_provider_duckling.registry.catalog import Duckling

_LISTED_DAYS = 10


def run(args: argparse.Namespace, out: Console) -> int:
    """Print the summary (no team) or the detail (teams); exit 1 if a lake could not be read."""
    from airflow_provider_duckling.registry import settings

    teams = list(args.teams or ())
    ducklings = select(args, teams or None)
    detail = bool(teams)
    read_lakes = detail if args.lake is None else args.lake
    if not ducklings:
        if args.json:
            emit_json(out, {"teams": [], "totals": totals([]), "problems": []})
        else:
            out.print(f"No ducklings in {registry_file(args)}.")
        return OK
    until = yesterday()
    closed = last_closed_day(dt.datetime.now(dt.UTC), settings.settle_delay())
    figures, problems = collect(args, ducklings, until, closed, read_lakes, out)
    summaries = summarise(figures)
    shown = summaries if detail else worst_first(summaries)
    if args.behind:
        shown = [t for t in shown if t.behind]
    hidden = max(len(shown) - args.limit, 0) if args.limit else 0
    if hidden:
        shown = shown[:args.limit]
    if args.json:
        emit_json(out, {
            "last_closed_day": closed, "expected_until": until, "lake_read": read_lakes,
            "totals": totals(summaries), "not_shown": hidden, "teams": [t.to_json() for t in shown],
            "problems": problems,
        })
    elif detail:
        _print_detail(out, shown, until, closed)
    else:
        _print_summary(out, summaries, shown, hidden, closed, read_lakes)
    if not args.json:
        for line in problems:
            out.print(line)
    return PROBLEMS if problems else OK


def collect(args: argparse.Namespace, ducklings: list[Duckling], until: dt.date, closed: dt.date, read_lakes: bool,
            out: Console) -> tuple[list[TableFigures], list[str]]:
    """Every team table's figures: one query for the run states, one for the registrations, lakes if asked."""
    from airflow_provider_duckling.domain.partitions import dag_id_for
    from airflow_provider_duckling.scheduling.dag_factory import TABLES

    discovered = discovered_dates(args)
    states = day_states(dag_id_for(t, d.team_id) for d in ducklings for t in TABLES)
    moved = registrations({asset_name(d.team_id, t): (d.team_id, t) for d in ducklings for t in TABLES})
    lakes, problems = _read_lakes(ducklings, TABLES, args.parallel, out) if read_lakes else ({}, [])
    figures = []
    for d in ducklings:
        lake = lakes.get(d.team_id)
        for name in TABLES:
            figures.append(table_figures(
                d.team_id, name, start_for(d, name, discovered), last_closed=closed, expected_until=until,
                runs=states.get(dag_id_for(name, d.team_id), DayStates()),
                lake_days=lake[name] if lake is not None else None,
                moved=moved.get((d.team_id, name), Moved()), paused=bool(getattr(d, "paused", False)),
            ))
    return figures, problems


def _read_lakes(ducklings: list[Duckling], tables: tuple[str, ...], parallel: int,
                out: Console) -> tuple[dict[int, dict[str, set[dt.date]]], list[str]]:
    """The registered days of each lake, ``parallel`` at a time; one unreadable lake never hides the others."""
    lakes: dict[int, dict[str, set[dt.date]]] = {}
    problems: list[str] = []
    with progress(out, "reading lakes", len(ducklings)) as advance, \
            ThreadPoolExecutor(max_workers=max(1, min(parallel, len(ducklings)))) as pool:
        futures = {d.team_id: pool.submit(registered_days, d, tables) for d in ducklings}
        for team_id, future in futures.items():
            try:
                lakes[team_id] = future.result()
            except Exception as exc:  # noqa: BLE001 - reported per team, the rest is still shown
                problems.append(f"team {team_id}: catalog: cannot read the lake: {scrubbed_message(exc)}")
            advance(note=f"team {team_id}")
    return lakes, problems


def _print_summary(out: Console, every: list[TeamSummary], shown: list[TeamSummary], hidden: int, closed: dt.date,
                   read_lakes: bool) -> None:
    count = totals(every)
    out.print(f"{count['teams']} team(s): {count['behind']} behind, {count['failing']} with failed days, "
              f"{count['running']} running, {count['paused']} paused, {count['pending_discovery']} pending discovery; "
              f"{count['rows']} rows, {human_bytes(count['bytes'])} registered")
    source = "runs and lakes" if read_lakes else "Airflow's runs and registrations (--lake also reads the lakes)"
    rows = []
    for t in shown:
        events, persons = t.tables.get("events"), t.tables.get("persons")
        note = "paused" if t.paused else ("pending discovery" if t.pending else "")
        rows.append((t.team_id, "–" if t.lag_days is None else t.lag_days, _latest(events), _latest(persons),
                     t.failed_days, t.running_days, t.rows, human_bytes(t.bytes), note))
    out.print(table(f"Worst lag first: days behind {closed} (the newest settled UTC day), from {source}",
                    ("team", "lag", "events latest", "persons latest", "failed", "running", "rows", "bytes", "note"),
                    rows, right=("team", "lag", "failed", "running", "rows", "bytes")))
    if hidden:
        out.print(f"… and {hidden} more team(s) (--limit)")
    if any(t.failed_days or t.lag_days for t in shown):
        out.print("Detail of one team: duckling status TEAM")


def _latest(figures: TableFigures | None) -> str:
    if figures is None:
        return "–"
    if figures.latest_day is not None:
        return figures.latest_day.isoformat()
    return "pending" if figures.start is None else "none"


def _print_detail(out: Console, shown: list[TeamSummary], until: dt.date, closed: dt.date) -> None:
    rows, failed_lines = [], []
    for team in shown:
        for name, f in team.tables.items():
            rows.append((
                f.team_id, name, f.start.isoformat() if f.start else "pending discovery",
                f.expected_days if f.expected_days is not None else "–",
                f.registered_days if f.registered_days is not None else "–",
                len(f.failed_days), f.running_days, f.latest_day.isoformat() if f.latest_day else "none",
                "–" if f.lag_days is None else f.lag_days, f.rows, human_bytes(f.bytes), _last_success(f),
                coverage_bar(f.covered_days, f.expected_days),
            ))
            if f.failed_days:
                days = f.failed_days
                more = f" … and {len(days) - _LISTED_DAYS} more" if len(days) > _LISTED_DAYS else ""
                failed_lines.append(f"team {f.team_id} {name}: failed days "
                                    f"{', '.join(x.isoformat() for x in days[:_LISTED_DAYS])}{more}")
        if team.paused:
            failed_lines.append(f"team {team.team_id} is paused in the registry: its DAGs schedule nothing "
                                f"(duckling catalog resume {team.team_id})")
    columns = ("team", "table", "since", "expected", "registered", "failed", "running", "latest", "lag", "rows",
               "bytes", "last success", "coverage")
    title = f"Back-fill status, expected days up to {until} (yesterday, UTC); lag in days behind {closed} (settled)"
    out.print(table(title, columns, rows,
                    right=("team", "expected", "registered", "failed", "running", "lag", "rows", "bytes")))
    for line in failed_lines:
        out.print(line)
    if any(f.failed_days for t in shown for f in t.tables.values()):
        out.print("Re-run a failed day: duckling run <team>_<YYYY-MM-DD> [--table persons]")


def _last_success(f: TableFigures) -> str:
    if f.last_success is None:
        return "never"
    when = f.last_success.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when} (day {f.last_success_day})"
