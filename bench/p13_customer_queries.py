"""P13: the customer's queries on a 3-year lake, before and after maintenance, and against ClickHouse.

A duckling on the production shape (PostgreSQL catalog, S3 data on moto) gets ``--days`` daily event files of
``--rows`` events (``--users`` distinct_ids), each registered by its own transaction as the daily runs do;
every 7th day then gets a small appended file (late events, registered without cleanup) and every 11th day is
re-run (its file replaced), so maintenance has days of several files to merge. Persons: ``--users`` persons
over 20 daily top-ups (a second version for every 5th), so ``persons_current`` exists.

Two identical lakes are loaded; one is never maintained (the reference), the other gets ``--passes`` passes of
:func:`airflow_provider_duckling.transfer.maintenance.maintain_lake`. Each query runs on both in turn (ABBA
order), each time on a fresh attach (the attach itself not timed), ``--repeat`` times (``--repeat-fast`` for a
query under a second); the figure is the median of the per-repetition ratios maintained ÷ never maintained, so
what drifts over minutes (moto, PostgreSQL, the page cache) touches both sides alike. Timed before maintenance
too, while the lakes are identical (an A/A comparison): that ratio should be 1 and its spread is the noise a
figure after maintenance must be read against. For comparison, the maintained lake is then laid out as the
alternatives would leave it: one file per month (sorted by timestamp), then DuckLake's
``ducklake_merge_adjacent_files`` over everything (what maintenance did before issue 23), each again against the
reference. ClickHouse: the lake's live rows loaded into chdb (in-process, MergeTree with the source schema's
sorting key), same queries.

    .venv/bin/python bench/p13_customer_queries.py [--days 1100] [--rows 3000] [--repeat 7] [--repeat-fast 31] [--quick] [--only NAME]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from pathlib import Path

from _stack import airflow_home, engines, remove, table, workdir

TEAM = 1
_NOT_NULL = "SETTINGS schema_inference_make_columns_nullable = 0"  # a sorting key cannot be Nullable
LAKE_EVENTS, LAKE_PERSONS = "lake.posthog.events", "lake.posthog.persons_current"
CH_EVENTS = "bench.events"
CH_PERSONS = ("(SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY team_id, distinct_id ORDER BY _timestamp "
              "DESC, _inserted_at DESC, person_distinct_id_version DESC, person_version DESC) AS _rank "
              "FROM bench.persons) WHERE _rank = 1 AND id IS NOT NULL)")

#: name → SQL with {events}, {persons}, {day}, {next_day}, {month}, {next_month}, {user} ({ts} wraps a time).
QUERIES = {
    "a day's events": (
        "SELECT uuid, event, distinct_id, timestamp, properties FROM {events} WHERE team_id = 1 "
        "AND timestamp >= {day} AND timestamp < {next_day} ORDER BY timestamp"),
    "a day that had a late-events file": (
        "SELECT uuid, event, distinct_id, timestamp, properties FROM {events} WHERE team_id = 1 "
        "AND timestamp >= {late_day} AND timestamp < {late_next_day} ORDER BY timestamp"),
    "a month, events per type": (
        "SELECT event, count(*) AS n FROM {events} WHERE team_id = 1 AND timestamp >= {month} "
        "AND timestamp < {next_month} GROUP BY event ORDER BY event"),
    "one person's events + persons_current": (
        "SELECT e.timestamp, e.event, p.properties FROM {events} AS e JOIN {persons} AS p "
        "ON p.team_id = e.team_id AND p.distinct_id = e.distinct_id WHERE e.team_id = 1 AND e.distinct_id = {user} "
        "ORDER BY e.timestamp"),
    "count of everything": "SELECT count(*) FROM {events} WHERE team_id = 1",
}


def _events_sql(day: dt.date, rows: int, users: int, tag: str) -> str:
    """``rows`` events of the lake's schema on ``day`` (DuckDB-generated, deterministic)."""
    from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal
    from airflow_provider_duckling.domain.tables import EVENTS

    start = duckdb_literal(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    seed = duckdb_literal(f"{day.isoformat()}-{tag}-")
    generic = {"VARCHAR": "''", "BIGINT": str(TEAM), "BOOLEAN": "i % 7 = 0",
               "TIMESTAMPTZ": f"{start} + to_microseconds((i * 86399999999 // {max(rows - 1, 1)})::BIGINT)"}
    special = {
        "uuid": f"md5({seed} || i::VARCHAR)",
        "event": "['$pageview', '$autocapture', '$pageleave', 'signed_up', '$identify', 'purchase'][1 + (i * 7) % 6]",
        "properties": "'{\"$current_url\": \"https://example.com/p/' || (i % 97)::VARCHAR || '\", \"n\": ' || i::VARCHAR || '}'",
        "distinct_id": f"'user-' || ((i * 7919) % {users})::VARCHAR",
        "person_id": f"'person-' || ((i * 7919) % {users})::VARCHAR",
    }
    cols = ", ".join(f"{special.get(c.name, generic[c.lake_type])} AS {duckdb_ident(c.name)}" for c in EVENTS.columns)
    return f"SELECT {cols} FROM (SELECT range AS i FROM range({rows}))"


def _persons_sql(day: dt.date, index: int, users: int) -> str:
    """The persons top-up of ``day``: the users with ``n % 20 == index``, and version 2 of every 5th older one."""
    from airflow_provider_duckling.common.quoting import duckdb_literal

    at = duckdb_literal(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC))
    return (
        f"SELECT {TEAM}::BIGINT AS team_id, 'user-' || n::VARCHAR AS distinct_id, 'person-' || n::VARCHAR AS id, "
        "'{\"email\": \"u' || n::VARCHAR || '@example.com\", \"v\": ' || v::VARCHAR || '}' AS properties, "
        f"{at} AS created_at, true AS is_identified, v::BIGINT AS person_distinct_id_version, "
        f"v::UBIGINT AS person_version, {at} AS _timestamp, {at} AS _inserted_at "
        f"FROM (SELECT range AS n, 1 AS v FROM range({users}) WHERE range % 20 = {index} "
        f"UNION ALL SELECT range AS n, 2 AS v FROM range({users}) WHERE range % 20 < {index} AND range % 5 = 0)"
    )


def _register(con, storage, table_spec, day: dt.date, select: str, run: str, *, cleanup: bool = True) -> None:
    from airflow_provider_duckling.common.quoting import duckdb_literal
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.transfer.lake import register_files

    partition = Partition(TEAM, day)
    uri = storage.uri(partition.object_key(table_spec.name, run))
    con.execute(f"COPY ({select}) TO {duckdb_literal(uri)} (FORMAT parquet)")
    rows = int(con.execute(f"SELECT count(*) FROM read_parquet({duckdb_literal(uri)})").fetchone()[0])
    register_files(con, table_spec, partition, [uri], rows, storage.data_path, cleanup_existing=cleanup)


def _load(con, storage, days: list[dt.date], rows: int, users: int) -> None:
    from airflow_provider_duckling.domain.tables import EVENTS, PERSONS

    for day in days:
        _register(con, storage, EVENTS, day, _events_sql(day, rows, users, "run0"), "run0")
    for day in days[::7]:  # late events: a small second file, appended
        _register(con, storage, EVENTS, day, _events_sql(day, max(rows // 20, 2), users, "late"), "late", cleanup=False)
    for day in days[::11]:  # a re-run: the day's first file replaced
        _register(con, storage, EVENTS, day, _events_sql(day, rows, users, "run0"), "rerun")
    for index, day in enumerate(days[-20:]):
        _register(con, storage, PERSONS, day, _persons_sql(day, index, users), "persons")


def _params(days: list[dt.date], engine: str) -> dict[str, str]:
    """The queries' values: a day near the end (the customer's recent day; one file), its month, one user, and
    the nearest earlier day that got a late-events file (two files before maintenance, one after)."""
    from airflow_provider_duckling.common.quoting import duckdb_literal

    day = days[-40]
    late = days[(len(days) - 40) // 7 * 7]
    month = day.replace(day=1)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)

    def ts(d: dt.date) -> str:
        if engine == "clickhouse":
            return f"toDateTime64('{d.isoformat()} 00:00:00', 6, 'UTC')"
        return duckdb_literal(dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC))

    return {"day": ts(day), "next_day": ts(day + dt.timedelta(days=1)), "late_day": ts(late),
            "late_next_day": ts(late + dt.timedelta(days=1)), "month": ts(month),
            "next_month": ts(next_month), "user": "'user-42'"}


def _time_pair(hook, reference, candidate, days: list[dt.date], repeat: int, repeat_fast: int,
               ) -> dict[str, tuple[float, ...]]:
    """Each query on the two lakes in turn (ABBA order), each run on a fresh attach (not timed).

    A query is repeated ``repeat`` times, or ``repeat_fast`` times when its first run took under a second (the
    fast ones are where a few per cent of noise matters, and they are cheap to repeat). Returns name → (median
    seconds on ``reference``, median on ``candidate``, then the quartiles Q1, median, Q3 of the per-repetition
    ratios candidate ÷ reference). The two lakes are timed seconds apart, so what drifts over minutes (moto,
    PostgreSQL, the page cache) touches both alike and cancels in the ratio.
    """
    params = {"events": LAKE_EVENTS, "persons": LAKE_PERSONS, **_params(days, "duckdb")}
    times: dict[str, dict[str, list[float]]] = {name: {"ref": [], "cand": []} for name in QUERIES}
    wanted = dict.fromkeys(QUERIES, max(repeat, repeat_fast))
    lakes = {"ref": reference, "cand": candidate}
    for rep in range(max(repeat, repeat_fast)):
        for name, sql in QUERIES.items():
            if rep >= wanted[name]:
                continue
            for side in ("ref", "cand") if rep % 2 == 0 else ("cand", "ref"):
                duckling, storage = lakes[side]
                with hook.attach(duckling, storage, read_only=True) as con:
                    start = time.perf_counter()
                    con.execute(sql.format(**params)).fetchall()
                    times[name][side].append(time.perf_counter() - start)
            if rep == 0:
                wanted[name] = repeat_fast if max(times[name]["ref"] + times[name]["cand"]) < 1 else repeat
    return {name: (statistics.median(t["ref"]), statistics.median(t["cand"]),
                   *statistics.quantiles([c / r for r, c in zip(t["ref"], t["cand"], strict=True)], n=4))
            for name, t in times.items()}


def _clickhouse(root: Path, con, days: list[dt.date], repeat: int) -> dict[str, float]:
    """The lake's live rows loaded into chdb; median seconds per query."""
    from chdb import session

    files = root / "ch"
    files.mkdir()
    for name, source in (("events", LAKE_EVENTS), ("persons", "lake.posthog.persons")):
        con.execute(f"COPY (SELECT * FROM {source}) TO '{files / name}.parquet' (FORMAT parquet)")
    sess = session.Session(str(root / "chdb"))
    sess.query("CREATE DATABASE bench")
    sess.query(f"CREATE TABLE bench.events ENGINE = MergeTree ORDER BY (team_id, toDate(timestamp), event, "
               f"cityHash64(distinct_id), cityHash64(uuid)) AS SELECT * FROM file('{files / 'events'}.parquet', Parquet) {_NOT_NULL}")
    sess.query(f"CREATE TABLE bench.persons ENGINE = MergeTree ORDER BY (team_id, distinct_id) "
               f"AS SELECT * FROM file('{files / 'persons'}.parquet', Parquet) {_NOT_NULL}")
    sess.query("OPTIMIZE TABLE bench.events FINAL")
    params = {"events": CH_EVENTS, "persons": CH_PERSONS, **_params(days, "clickhouse")}
    times: dict[str, list[float]] = {name: [] for name in QUERIES}
    for _ in range(repeat):
        for name, sql in QUERIES.items():
            start = time.perf_counter()
            sess.query(sql.format(**params), "CSV")
            times[name].append(time.perf_counter() - start)
    sess.close()
    return {name: statistics.median(values) for name, values in times.items()}


def _relayout_months(con, days: list[dt.date]) -> None:
    """The alternative layout (b): one file per month, sorted by timestamp (bench only)."""
    from airflow_provider_duckling.common.quoting import duckdb_literal

    month = days[0].replace(day=1)
    con.execute("SET ducklake_default_data_inlining_row_limit = 0")
    while month <= days[-1]:
        nxt = (month + dt.timedelta(days=32)).replace(day=1)
        where = (f"timestamp >= {duckdb_literal(dt.datetime.combine(month, dt.time(), tzinfo=dt.UTC))} "
                 f"AND timestamp < {duckdb_literal(dt.datetime.combine(nxt, dt.time(), tzinfo=dt.UTC))}")
        con.execute("BEGIN")
        con.execute(f"CREATE OR REPLACE TEMP TABLE old_rows AS SELECT rowid AS r FROM {LAKE_EVENTS} WHERE {where}")
        con.execute(f"INSERT INTO {LAKE_EVENTS} SELECT * FROM {LAKE_EVENTS} WHERE {where} ORDER BY timestamp")
        con.execute(f"DELETE FROM {LAKE_EVENTS} WHERE rowid IN (SELECT r FROM old_rows)")
        con.execute("COMMIT")
        month = nxt


def _event_files(con) -> int:
    return int(con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'events', schema => 'posthog')"
                           ).fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1100)
    parser.add_argument("--rows", type=int, default=3000, help="events per day")
    parser.add_argument("--users", type=int, default=500, help="distinct_ids (and persons)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--repeat-fast", type=int, default=31, help="repetitions of a query that takes under 1 s")
    parser.add_argument("--passes", type=int, default=2, help="maintenance passes")
    parser.add_argument("--quick", action="store_true", help="200 days of 2,000 events")
    parser.add_argument("--only", default="", help="time only the queries whose name contains this (e.g. 'a day')")
    args = parser.parse_args()
    for name in [name for name in QUERIES if args.only not in name]:
        del QUERIES[name]
    if args.quick:
        args.days, args.rows = 200, 2000
    root = workdir("p13")
    os.environ.update(airflow_home(root))
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=n) for n in range(args.days)]
    stages: dict[str, dict[str, tuple[float, ...]]] = {}
    files: dict[str, int] = {}
    try:
        with engines(root, clickhouse=False) as bench:
            from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
            from airflow_provider_duckling.transfer.maintenance import maintain_lake

            hook = DuckLakeHook()
            lakes = {}
            started = time.perf_counter()
            for tag in ("p13ref", "p13maint"):  # two identical lakes: one never maintained, one maintained
                duckling = bench.new_duckling(TEAM, tag)
                storage = hook.storage(duckling)
                with hook.attach(duckling, storage) as con:
                    _load(con, storage, days, args.rows, args.users)
                    files["before"] = _event_files(con)
                lakes[tag] = (duckling, storage)
            loading = (time.perf_counter() - started) / 2
            reference, candidate = lakes["p13ref"], lakes["p13maint"]

            def timed() -> dict[str, tuple[float, ...]]:
                return _time_pair(hook, reference, candidate, days, args.repeat, args.repeat_fast)

            print(f"loaded two lakes of {args.days} days, {loading:.0f} s each ({files['before']} event files)",
                  flush=True)
            stages["before (two identical lakes)"] = timed()

            started = time.perf_counter()
            reports = []
            with hook.attach(*candidate) as con:
                for _ in range(args.passes):
                    now = dt.datetime.now(dt.UTC)
                    reports.append(maintain_lake(con, candidate[1], TEAM, now=now, snapshot_retention=dt.timedelta(0),
                                                 orphans_before=now - dt.timedelta(days=7)))
                files["after"] = _event_files(con)
            maintenance = time.perf_counter() - started
            print(f"{args.passes} maintenance passes in {maintenance:.0f} s: "
                  + "; ".join(f"merged {r.merged_files} files, {r.days_rewritten} days rewritten" for r in reports),
                  flush=True)
            stages["after"] = timed()

            with hook.attach(*candidate) as con:
                clickhouse = _clickhouse(root, con, days, args.repeat)
                _relayout_months(con, days)
                files["month files"] = _event_files(con)
            stages["month files"] = timed()
            with hook.attach(*candidate) as con:
                con.execute("CALL ducklake_merge_adjacent_files('lake', 'events', schema => 'posthog')")
                files["DuckLake merge"] = _event_files(con)
            stages["DuckLake merge"] = timed()
    finally:
        remove(root)
    _print(args, stages, clickhouse, files, loading, maintenance)


def _print(args, stages, clickhouse, files, loading: float, maintenance: float) -> None:
    print(f"\nP13 customer queries: {args.days} days × {args.rows} events ({args.users} users; late-event files on "
          f"every 7th day, re-runs on every 11th), PostgreSQL catalog + S3 (moto); two identical lakes loaded in "
          f"{loading:.0f} s each; {args.passes} maintenance passes {maintenance:.0f} s on one of them; each query "
          f"on both lakes in turn (ABBA), fresh attach each, {args.repeat} repetitions "
          f"({args.repeat_fast} for a query under 1 s); B ÷ A = median of the "
          f"per-repetition ratios of lake B (maintained) to lake A (never maintained), with their quartiles; A/A: "
          f"the same ratio while both lakes are identical (before maintenance), the noise; event files: "
          + ", ".join(f"{k} {v}" for k, v in files.items()))

    def ms(value: float) -> str:
        return f"{value * 1000:.0f} ms"

    rows = []
    for name in QUERIES:
        identical, after = stages["before (two identical lakes)"][name], stages["after"][name]
        rows.append((name, ms(identical[0]), f"{identical[3]:.2f} ({identical[2]:.2f}–{identical[4]:.2f})",
                     ms(after[0]), ms(after[1]), f"**{after[3]:.2f}** ({after[2]:.2f}–{after[4]:.2f})",
                     ms(clickhouse[name]), f"{after[1] / clickhouse[name]:.1f}",
                     f"{stages['month files'][name][3]:.2f}", f"{stages['DuckLake merge'][name][3]:.2f}"))
    print(table(["query", "before", "A/A: identical lakes (quartiles)", "after: A (never maintained)",
                 "after: B (maintained)", "after: B ÷ A (quartiles)", "ClickHouse", "B ÷ CH",
                 "month files ÷ A", "DuckLake merge ÷ A"], rows))

if __name__ == "__main__":
    main()
