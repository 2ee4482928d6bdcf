"""``duckling discover [TEAM…]``: start-date discovery, here and now, without a scheduler.

It runs the very pass ``duckling_discover_start_dates`` runs every 15 minutes
(:func:`airflow_provider_duckling.scheduling.discovery.run_discovery`): teams without a start date get their first
day with events in ClickHouse (persons: the last closed day), known teams are re-checked when
``[duckling] rediscovery_days`` says they are due, and the result goes into the same state file the DAG
file reads. Teams with a ``start_date`` in the registry, and paused teams, are not asked. Days that an
earlier start uncovers are recorded for back-fill; the discovery DAG triggers their runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from rich.console import Console

from airflow_provider_duckling.cli.errors import OK
from airflow_provider_duckling.cli.render import emit_json, table
from airflow_provider_duckling.cli.selection import registry_file, select, state_file


def run(args: argparse.Namespace, out: Console) -> int:
    """Discover, remember, and show per team and table the start date and where it came from."""
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.registry import settings
    from airflow_provider_duckling.registry.state import load_discovery_state
    from airflow_provider_duckling.scheduling.discovery import run_discovery

    ducklings = select(args, args.teams or None)
    path = state_file(args)
    if not ducklings:
        if args.json:
            emit_json(out, {"state_file": str(path), "teams": [], "backfill": []})
        else:
            out.print(f"No ducklings in {registry_file(args)}.")
        return OK
    before = load_discovery_state(path)
    after = run_discovery({d.team_id: d for d in ducklings}, ClickHouseHook, now=dt.datetime.now(dt.UTC),
                          floor=settings.start_date_floor(), rediscovery_days=settings.rediscovery_days(), path=path)
    results: list[dict[str, Any]] = []
    for d in ducklings:
        for name in ("events", "persons"):
            old = before.start_dates.get(name, {}).get(d.team_id)
            new = after.start_dates.get(name, {}).get(d.team_id)
            checked = after.checked.get(name, {}).get(d.team_id)
            if d.start_date is not None:
                start, source = d.start_date, "registry start_date (not asked)"
            elif getattr(d, "paused", False):
                start, source = new, "paused in the registry (not asked)"
            elif new is None:
                start, source = None, "no data in ClickHouse yet (asked again on the next pass)"
            elif old is None:
                start, source = new, "discovered now"
            elif new < old:
                start, source = new, f"moved earlier from {old}: the days before it are back-filled"
            else:
                start, source = new, f"known (last checked {checked})" if checked else "known"
            results.append({"team_id": d.team_id, "table": name, "start_date": start, "source": source})
    ranges = [{"team_id": team, "table": name, "first": first, "last": end - dt.timedelta(days=1)}
              for name, teams in sorted(after.backfill.items()) for team, (first, end) in sorted(teams.items())
              if team in {d.team_id for d in ducklings}]
    if args.json:
        emit_json(out, {"state_file": str(path), "teams": results, "backfill": ranges})
        return OK
    rows = [(r["team_id"], r["table"], r["start_date"].isoformat() if r["start_date"] else "–", r["source"])
            for r in results]
    out.print(table(f"Start dates ({path})", ("team", "table", "start date", "source"), rows, right=("team",)))
    for r in ranges:
        out.print(f"team {r['team_id']} {r['table']}: days {r['first']} … {r['last']} wait for back-fill runs "
                  "(duckling_discover_start_dates triggers them)")
    out.print("The DAG file uses these dates from its next parse.")
    return OK
