"""The ClickHouse source schema and deterministic sample events, shared by tests, demo and compose.

Each team-day gets ``rows`` events spread evenly from 00:00:00.000000 to 23:59:59.999999 UTC, so both
day boundaries are always exercised.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import TYPE_CHECKING

from airflow_provider_duckling.common.quoting import clickhouse_ident
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

if TYPE_CHECKING:
    from airflow_provider_duckling.registry.catalog import Duckling

SOURCE_DATABASE = "posthog"


def schema_statements(database: str = SOURCE_DATABASE) -> list[str]:
    """The statements of ``sql/clickhouse_schema.sql`` (database renamed if asked)."""
    text = resources.files("airflow_provider_duckling").joinpath("sql/clickhouse_schema.sql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    statements = [s.strip() for s in body.split(";") if s.strip()]
    if database != SOURCE_DATABASE:
        statements = [s.replace("posthog.", f"{clickhouse_ident(database)}.").replace(
            f"DATABASE IF NOT EXISTS {SOURCE_DATABASE}", f"DATABASE IF NOT EXISTS {clickhouse_ident(database)}") for s in statements]
    return statements


def create_schema(hook: ClickHouseHook) -> None:
    for statement in schema_statements(hook.database):
        hook.execute(statement)


_INSERT_EVENTS = """
INSERT INTO {table}
SELECT
    generateUUIDv4(number) AS uuid,
    ['$pageview', '$autocapture', 'signed_up', '$identify'][1 + number % 4] AS event,
    concat('{"$current_url": "https://example.com/', toString(number % 17), '", "n": ', toString(number), ', "quote": "it''s"}') AS properties,
    addMicroseconds(addDays(toDateTime64({day:Date}, 6, 'UTC'), intDiv(number, {rows:UInt64})),
        intDiv(toUInt64(number % {rows:UInt64}) * 86399999999, greatest({rows:UInt64} - 1, 1))) AS timestamp,
    {team_id:Int64} AS team_id,
    concat('user-', toString(number % 50)) AS distinct_id,
    if(number % 4 = 1, 'a:nth-child="1"nth-of-type="1"', '') AS elements_chain,
    addMicroseconds(addDays(toDateTime64({day:Date}, 6, 'UTC'), intDiv(number, {rows:UInt64})),
        1000 + intDiv(toUInt64(number % {rows:UInt64}) * 86399999999, greatest({rows:UInt64} - 1, 1))) AS created_at,
    reinterpretAsUUID(cityHash64({team_id:Int64}, number % 50)) AS person_id,
    toDateTime64('2023-06-01 12:00:00.123', 3) AS person_created_at,
    '{"email": "u@example.com"}' AS person_properties,
    '' , '', '', '', '',
    toDateTime64(0, 3), toDateTime64(0, 3), toDateTime64(0, 3), toDateTime64(0, 3), toDateTime64(0, 3),
    if(number % 10 = 0, 'propertyless', 'full') AS person_mode,
    number % 7 = 0 AS historical_migration
FROM numbers({rows:UInt64} * {days:UInt64})
"""


def insert_events(hook: ClickHouseHook, team_id: int, day: dt.date, rows: int, days: int = 1) -> None:
    """Insert ``rows`` sample events for one team-day, or for each of ``days`` days from ``day`` on (one
    statement: years of history in about a second)."""
    table = f"{clickhouse_ident(hook.database)}.{clickhouse_ident('events')}"
    hook.execute(_INSERT_EVENTS.replace("{table}", table),
                 {"team_id": team_id, "day": day.isoformat(), "rows": rows, "days": days})


def insert_event_at(hook: ClickHouseHook, team_id: int, timestamp: str, rows: int = 1) -> None:
    """Insert ``rows`` sample events at ``timestamp`` (``'YYYY-MM-DD hh:mm:ss[.ffffff]'`` UTC, any year
    DateTime64 holds: 1900-2299), for the edges a team-day must survive (pre-1970, after 2149)."""
    table = f"{clickhouse_ident(hook.database)}.{clickhouse_ident('events')}"
    hook.execute(
        f"INSERT INTO {table} (uuid, event, properties, timestamp, team_id, distinct_id, created_at) "
        "SELECT generateUUIDv4(number), 'edge', '{}', toDateTime64({ts:String}, 6, 'UTC'), {team_id:Int64}, "
        "concat('edge-', toString(number)), toDateTime64({ts:String}, 6, 'UTC') FROM numbers({rows:UInt64})",
        {"team_id": team_id, "ts": timestamp, "rows": rows},
    )


def rows_for(team_id: int, day_index: int, base: int = 200) -> int:
    """A different, deterministic row count per team-day, so mix-ups show."""
    return base + 37 * team_id + 11 * day_index


def seed_events(hook: ClickHouseHook, team_ids: list[int], days: list[dt.date], base: int = 200) -> dict[tuple[int, dt.date], int]:
    """Create the schema and insert sample events; returns the row count per (team, day)."""
    create_schema(hook)
    counts = {}
    for team_id in team_ids:
        for index, day in enumerate(days):
            counts[(team_id, day)] = rows_for(team_id, index, base)
            insert_events(hook, team_id, day, counts[(team_id, day)])
    return counts


def clickhouse_day_counts(hook: ClickHouseHook, team_id: int) -> dict[dt.date, int]:
    """Rows per UTC day of one team in ClickHouse (what the duckling must match). ``toDate32``: ``toDate``
    wraps a row after 2149-06-06 onto a 1970 day."""
    table = f"{clickhouse_ident(hook.database)}.{clickhouse_ident('events')}"
    rows = hook.query_rows(
        f"SELECT toDate32(e.timestamp) AS d, count() FROM {table} AS e WHERE e.team_id = {{team_id:Int64}} "
        "AND e.timestamp >= toDateTime64('1970-01-01 00:00:00', 6, 'UTC') GROUP BY d ORDER BY d",
        {"team_id": team_id},
    )
    return {d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)): int(n) for d, n in rows}


def insert_person(
    hook: ClickHouseHook, team_id: int, person_id: str, version: int, timestamp: dt.datetime,
    properties: str = "{}", is_identified: bool = True, is_deleted: bool = False,
    created_at: dt.datetime | None = None,
) -> None:
    """Write one version of a person (ReplacingMergeTree: the highest version wins)."""
    table = f"{clickhouse_ident(hook.database)}.{clickhouse_ident('person')}"
    hook.execute(
        f"INSERT INTO {table} (id, team_id, properties, is_identified, created_at, version, is_deleted, _timestamp) "
        "SELECT {id:UUID}, {team_id:Int64}, {properties:String}, {identified:Int8}, "
        "toDateTime64({created:String}, 3, 'UTC'), {version:UInt64}, {deleted:Int8}, toDateTime({ts:String}, 'UTC')",
        {
            "id": person_id, "team_id": team_id, "properties": properties, "identified": int(is_identified),
            "created": (created_at or timestamp).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], "version": version,
            "deleted": int(is_deleted), "ts": timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


def insert_distinct_id(
    hook: ClickHouseHook, team_id: int, distinct_id: str, person_id: str, version: int, timestamp: dt.datetime,
    is_deleted: bool = False,
) -> None:
    """Write one version of a distinct_id → person mapping."""
    table = f"{clickhouse_ident(hook.database)}.{clickhouse_ident('person_distinct_id2')}"
    hook.execute(
        f"INSERT INTO {table} (team_id, distinct_id, person_id, version, is_deleted, _timestamp) "
        "SELECT {team_id:Int64}, {distinct_id:String}, {person_id:UUID}, {version:Int64}, {deleted:Int8}, "
        "toDateTime({ts:String}, 'UTC')",
        {
            "team_id": team_id, "distinct_id": distinct_id, "person_id": person_id, "version": version,
            "deleted": int(is_deleted), "ts": timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


def seed_persons(hook: ClickHouseHook, team_ids: list[int], days: list[dt.date], per_day: int = 20) -> None:
    """``per_day`` persons per team-day, each with two distinct_ids, created at noon UTC of the day."""
    import uuid

    for team_id in team_ids:
        for index, day in enumerate(days):
            for n in range(per_day):
                person = str(uuid.uuid5(uuid.NAMESPACE_URL, f"person/{team_id}/{index}/{n}"))
                at = dt.datetime.combine(day, dt.time(12, 0), tzinfo=dt.UTC) + dt.timedelta(minutes=n)
                insert_person(hook, team_id, person, 1, at, properties=f'{{"email": "p{n}@example.com"}}')
                for suffix in ("a", "b"):
                    insert_distinct_id(hook, team_id, f"{person[:8]}-{suffix}", person, 1, at)


def clickhouse_scope_rows(hook: ClickHouseHook, table_name: str, team_id: int, day: dt.date) -> int:
    """How many rows the export of one team-day writes (the count of the export SELECT itself)."""
    from airflow_provider_duckling.domain.tables import export_select, get_table

    select = export_select(get_table(table_name), hook.database, daily=True)
    return int(hook.query_rows(f"SELECT count() FROM ({select})", {"team_id": team_id, "day": day.isoformat()})[0][0])


# ---------------------------------------------------------------- seeding a ClickHouse server (docker compose)


def registry_sample_days(start: dt.date | None, until: dt.date, days: int) -> list[dt.date]:
    """The days to seed for one duckling: from its ``start_date`` (else the last ``days`` days) to ``until``."""
    first = start if start is not None else until - dt.timedelta(days=days - 1)
    return [first + dt.timedelta(days=n) for n in range((until - first).days + 1)]


def seed_registry(
    hook: ClickHouseHook, ducklings: list[Duckling], until: dt.date, days: int = 7, person_days: int = 7,
    persons_per_day: int = 5, base: int = 200,
) -> dict[str, int]:
    """Sample events (every day from each duckling's start date to ``until``) and persons (the last
    ``person_days`` of those days) for the registry's teams; team-days that already hold rows are left alone,
    so running it again adds nothing. Returns how many team-days of events and persons were added."""
    import uuid

    create_schema(hook)
    db = clickhouse_ident(hook.database)
    have_events = {(int(t), str(d)) for t, d in hook.query_rows(
        f"SELECT DISTINCT team_id, toString(toDate32(timestamp)) FROM {db}.events")}
    have_persons = {(int(t), str(d)) for t, d in hook.query_rows(
        f"SELECT DISTINCT team_id, toString(toDate(_timestamp)) FROM {db}.person")}
    added = {"event_days": 0, "person_days": 0}
    for duckling in ducklings:
        team = duckling.team_id
        seed_days = registry_sample_days(duckling.start_date, until, days)
        for index, day in enumerate(seed_days):
            if (team, day.isoformat()) not in have_events:
                insert_events(hook, team, day, rows_for(team, index, base))
                added["event_days"] += 1
        for day in seed_days[-person_days:] if person_days > 0 else []:
            if (team, day.isoformat()) in have_persons:
                continue
            for n in range(persons_per_day):
                person = str(uuid.uuid5(uuid.NAMESPACE_URL, f"person/{team}/{day.isoformat()}/{n}"))
                at = dt.datetime.combine(day, dt.time(12, 0), tzinfo=dt.UTC) + dt.timedelta(minutes=n)
                insert_person(hook, team, person, 1, at, properties=f'{{"email": "p{n}@example.com"}}')
                for suffix in ("a", "b"):
                    insert_distinct_id(hook, team, f"{person[:8]}-{suffix}", person, 1, at)
            added["person_days"] += 1
    return added


def _wait_for_clickhouse(conn_id: str, timeout: float) -> ClickHouseHook:
    """A hook whose server answers ``SELECT 1`` (a server may still be starting), or the last error."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        hook = ClickHouseHook(conn_id)
        try:
            hook.query_rows("SELECT 1")
            return hook
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"waiting for ClickHouse ({type(exc).__name__})", flush=True)
            time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    """Seed the ClickHouse of a connection with sample events and persons for the teams of a registry.

    python -m airflow_provider_duckling.demo.sample_data --registry ducklings.yaml [--until YYYY-MM-DD]
    """
    import argparse

    from airflow_provider_duckling.registry.catalog import load_registry

    parser = argparse.ArgumentParser(description=(main.__doc__ or "").splitlines()[0])
    parser.add_argument("--registry", required=True, help="duckling registry file: whose teams to seed")
    parser.add_argument("--conn-id", default="clickhouse_default", help="ClickHouse connection (default clickhouse_default)")
    parser.add_argument("--until", type=dt.date.fromisoformat, default=None,
                        help="last day to seed (default: yesterday, UTC)")
    parser.add_argument("--days", type=int, default=7, help="days to seed for a duckling without start_date")
    parser.add_argument("--person-days", type=int, default=7, help="seed persons on the last N seeded days")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for ClickHouse to answer")
    args = parser.parse_args(argv)
    until = args.until or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    ducklings = sorted(load_registry(args.registry).values(), key=lambda d: d.team_id)
    hook = _wait_for_clickhouse(args.conn_id, args.wait)
    added = seed_registry(hook, ducklings, until, days=args.days, person_days=args.person_days)
    teams = ", ".join(str(d.team_id) for d in ducklings)
    print(f"sample data for teams {teams} until {until}: added {added['event_days']} team-days of events, "
          f"{added['person_days']} of persons (existing team-days kept)", flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
