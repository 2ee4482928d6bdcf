"""``duckling status [TEAM]``: per team and table, how far the back-fill has come.

Expected days run from the table's start date (registry, else discovered) to yesterday (UTC). Registered
days are the days the lake holds rows for (read-only; ``--no-lake`` skips the lakes). Failed and running
count days by the state of their latest Airflow run; last success is the newest successful run. A day is
covered when the lake holds it or its latest run succeeded (a day without data registers no rows).
"""

from __future__ import annotations

import argparse
import datetime as dt

from rich.console import Console

from airflow_provider_duckling.cli.errors import OK, PROBLEMS
from airflow_provider_duckling.cli.history import DayStates, day_states
from airflow_provider_duckling.cli.lake_read import registered_days
from airflow_provider_duckling.cli.render import coverage_bar, progress, table
from airflow_provider_duckling.cli.selection import (
    discovered_dates,
    registry_file,
    select,
    start_for,
    yesterday,
)
from airflow_provider_duckling.redaction import scrubbed_message

_LISTED_DAYS = 10


def run(args: argparse.Namespace, out: Console) -> int:
    """Print the status table; exit 1 if a lake could not be read (the rest is still shown)."""
    from airflow_provider_duckling.dag_factory import TABLES, dag_id_for

    ducklings = select(args, [args.team] if args.team is not None else None)
    if not ducklings:
        out.print(f"No ducklings in {registry_file(args)}.")
        return OK
    discovered = discovered_dates(args)
    last = yesterday()
    states = day_states(dag_id_for(t, d.team_id) for d in ducklings for t in TABLES)
    problems: list[str] = []
    lakes: dict[int, dict[str, set[dt.date]] | None] = {}
    with progress(out, "reading lakes", len(ducklings) if args.lake else 0) as advance:
        for d in ducklings:
            lakes[d.team_id] = None
            if not args.lake:
                continue
            try:
                lakes[d.team_id] = registered_days(d, TABLES)
            except Exception as exc:  # noqa: BLE001 - one unreadable lake must not hide the others
                problems.append(f"team {d.team_id}: catalog: cannot read the lake: {scrubbed_message(exc)}")
            advance(note=f"team {d.team_id}")

    rows, failed_lines = [], []
    for d in ducklings:
        for name in TABLES:
            start = start_for(d, name, discovered)
            runs = states.get(dag_id_for(name, d.team_id), DayStates())
            lake = lakes[d.team_id]
            registered = lake[name] if lake is not None else None
            expected = max((last - start).days + 1, 0) if start else None

            def in_range(days: set[dt.date], start: dt.date | None = start) -> set[dt.date]:
                return {day for day in days if start and start <= day <= last}

            covered = in_range(runs.succeeded) | in_range(registered or set())
            rows.append((
                d.team_id, name, start.isoformat() if start else "pending discovery",
                expected if expected is not None else "–",
                len(registered) if registered is not None else "–",
                len(runs.failed), len(runs.running), _last_success(runs),
                coverage_bar(len(covered), expected),
            ))
            if runs.failed:
                days = sorted(runs.failed)
                more = f" … and {len(days) - _LISTED_DAYS} more" if len(days) > _LISTED_DAYS else ""
                failed_lines.append(f"team {d.team_id} {name}: failed days "
                                    f"{', '.join(x.isoformat() for x in days[:_LISTED_DAYS])}{more}")

    columns = ("team", "table", "since", "expected", "registered", "failed", "running", "last success", "coverage")
    title = f"Back-fill status, expected days up to {last} (yesterday, UTC)"
    out.print(table(title, columns, rows, right=("team", "expected", "registered", "failed", "running")))
    for line in failed_lines:
        out.print(line)
    if failed_lines:
        out.print("Re-run a failed day: duckling run <team>_<YYYY-MM-DD> [--table persons]")
    for line in problems:
        out.print(line)
    return PROBLEMS if problems else OK


def _last_success(runs: DayStates) -> str:
    if runs.last_success is None:
        return "never"
    when = runs.last_success.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when} (day {runs.last_success_day})"
