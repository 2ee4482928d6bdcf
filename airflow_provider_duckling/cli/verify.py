"""``duckling verify TEAM``: reconcile ClickHouse with the duckling and name the days that differ.

Events, per UTC day: ClickHouse's side is the export's own SELECT (``tables.export_select``: same team and
day filter, same casts), so verify checks exactly what a run would have written; the lake side is one
read-only query over the range. Each side reports its row count and a cheap checksum both engines compute
identically (Σ epoch µs of ``timestamp``, Σ bytes of ``distinct_id``, Σ bytes of every text column: the lake's
side decodes every string column of each day, as the customer's queries do, so a file DuckDB refuses is a
difference, reported as unreadable). Persons: the team's current answer
in ClickHouse (distinct_id → person id, properties, version) against the lake's ``persons_current`` view,
with a digest of every row's answer, so a wrong mapping or stale properties differ.
"""

from __future__ import annotations

import argparse
import datetime as dt

from rich.console import Console

from airflow_provider_duckling.cli.errors import OK, PROBLEMS, UsageError
from airflow_provider_duckling.cli.render import emit_json, progress, table
from airflow_provider_duckling.cli.selection import discovered_dates, select, start_for, yesterday
from airflow_provider_duckling.common.quoting import clickhouse_ident
from airflow_provider_duckling.domain.partitions import parse_day
from airflow_provider_duckling.domain.tables import EVENTS, PERSONS, export_select
from airflow_provider_duckling.health.tallies import (
    EVENTS_TERM,
    PERSONS_TERM,
    Tally,
    clickhouse_tally,
    current_persons_tally,
    day_tallies,
    registered_days,
)
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry.catalog import Duckling


def day_range(args: argparse.Namespace, duckling: Duckling) -> tuple[dt.date, dt.date]:
    """``--from``/``--to`` (closed UTC days), defaulting to the team's start date (else the lake's first day)
    and yesterday."""
    last = parse_day(args.to) if args.to else yesterday()
    if args.since:
        first = parse_day(args.since)
    else:
        first = start_for(duckling, "events", discovered_dates(args))
        if first is None:
            days = registered_days(duckling, ("events",))["events"]
            if not days:
                raise UsageError("no start date is known for this team and its lake holds no events: pass --from DAY")
            first = min(days)
    if first > last:
        raise UsageError(f"--from {first} is after --to {last}")
    return first, last


def run(args: argparse.Namespace, out: Console) -> int:
    """Compare; print the differing days (or the persons totals); exit 1 when anything differs."""
    (duckling,) = select(args, [args.team])
    if args.table == "persons":
        if args.since or args.to:
            raise UsageError("--from/--to apply to events; persons are compared as the team's current persons")
        return _persons(duckling, out, args.json)
    first, last = day_range(args, duckling)
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    lake = day_tallies(duckling, first, last)
    hook = ClickHouseHook()
    select_sql = export_select(EVENTS, hook.database, daily=True)
    empty = Tally(0, (0, 0))
    differing: list[tuple[dt.date, Tally, Tally]] = []
    with progress(out, f"team {duckling.team_id} events", len(days)) as advance:
        for day in days:
            source = clickhouse_tally(hook, select_sql, EVENTS_TERM, {"team_id": duckling.team_id, "day": day})
            held = lake.get(day, empty)
            if source != held:
                differing.append((day, source, held))
            advance(note=day.isoformat())
    span = f"team {duckling.team_id} events, {first} … {last} ({len(days)} days)"
    if args.json:
        emit_json(out, {
            "team_id": duckling.team_id, "table": "events", "from": first, "to": last, "days": len(days),
            "match": not differing,
            "differing_days": [{"day": day, "clickhouse_rows": s.rows, "duckling_rows": h.rows,
                                "checksum_matches": s.same_content(h), "readable": h.unreadable is None,
                                "unreadable": h.unreadable} for day, s, h in differing],
        })
        return PROBLEMS if differing else OK
    if not differing:
        out.print(f"All days match: {span}, rows and checksums.")
        return OK
    rows = [(day, s.rows, h.rows, f"{h.rows - s.rows:+d}", _content(s, h)) for day, s, h in differing]
    out.print(table(f"Days that differ: {span}", ("day", "clickhouse rows", "duckling rows", "difference", "checksum"),
                    rows, right=("clickhouse rows", "duckling rows", "difference")))
    out.print(f"{len(differing)} of {len(days)} day(s) differ. Re-run one with: "
              f"duckling run {duckling.team_id}_{differing[0][0]}")
    return PROBLEMS


def _content(source: Tally, held: Tally) -> str:
    """The checksum column: same, differs, or why DuckDB cannot read the lake's files of the day."""
    if held.unreadable:
        return f"unreadable: {held.unreadable}"
    return "same" if source.same_content(held) else "differs"


def _persons(duckling: Duckling, out: Console, as_json: bool = False) -> int:
    hook = ClickHouseHook()
    team_id = duckling.team_id
    live = f"SELECT * FROM ({export_select(PERSONS, hook.database, daily=False)}) WHERE {clickhouse_ident('id')} IS NOT NULL"
    source = clickhouse_tally(hook, live, PERSONS_TERM, {"team_id": team_id})
    held = current_persons_tally(duckling) or Tally(0, (0, 0))
    if as_json:
        emit_json(out, {"team_id": team_id, "table": "persons", "clickhouse_rows": source.rows,
                        "duckling_rows": held.rows, "checksum_matches": source.same_content(held),
                        "unreadable": held.unreadable,
                        "match": source == held})
        return OK if source == held else PROBLEMS
    rows = [("clickhouse (current)", source.rows), ("duckling (persons_current)", held.rows)]
    out.print(table(f"Team {team_id} persons", ("side", "persons"), rows, right=("persons",)))
    if source == held:
        out.print("Persons match: rows and checksums.")
        return OK
    what = ("unreadable: " + held.unreadable if held.unreadable else "rows" if source.rows != held.rows
            else "checksums: a distinct_id maps to another person, or stale properties")
    out.print(f"Persons differ ({what}). Refresh them with: duckling run {team_id}_{yesterday()} --table persons "
              "--full-export")
    return PROBLEMS
