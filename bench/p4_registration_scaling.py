"""P4: registering a file in a lake of 1,000 files, against registering one in a lake of 10.

Two ducklings like production (PostgreSQL catalogs on the test PostgreSQL, data in moto S3 buckets, the
role assumed through moto STS) get one tiny file per day, registered one partition at a time with the
package's own ``register_files`` (schema check + swap transaction): one lake is filled to just below 1,000
files, the other to just below 10. Then registrations into the two lakes alternate — the 8th…12th file of
the small lake and the 998th…1,002nd of the large one — each on a freshly attached lake, as a register task
does, so that both sides see the same machine load. Ratio = median registration time at the 1,000th ÷ at
the 10th. (The filling registrations run on one long-lived connection to save time; the catalog they leave
behind is the same.)

To say where time grows, every statement ``register_files`` sends to DuckDB is timed, and during the
alternating registrations PostgreSQL logs every statement DuckLake sends to the two catalogs
(``log_min_duration_statement = 0``); both are summed per registration and printed, biggest growth first.

    .venv/bin/python bench/p4_registration_scaling.py [--files 1000] [--early 10] [--window 5]
        [--rows-per-file 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import time
from collections import defaultdict
from pathlib import Path

import _stack

FIRST_DAY = dt.date(2021, 1, 1)
GOAL = 1.5


_PG_LINE = re.compile(
    r"^@(\w*)@ .*LOG:\s+duration: ([\d.]+) ms\s+(?:statement|execute [^:]*|parse [^:]*|bind [^:]*): (.*)")
PG_LOGGING = {"log_min_duration_statement": "0", "log_line_prefix": "'@%d@ '"}


def pg_statements(log: Path, start: int, end: int) -> dict[str, dict[str, float]]:
    """Seconds per database and statement shape that PostgreSQL logged between two offsets of its log."""
    with log.open("rb") as handle:
        handle.seek(start)
        text = handle.read(end - start).decode(errors="replace")
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    current: list = []

    def flush() -> None:
        if current:
            totals[current[0]][_stack.shape(" ".join(current[2:]))] += current[1]
            current.clear()

    for line in text.splitlines():
        match = _PG_LINE.search(line)
        if match:
            flush()
            current.extend([match.group(1), float(match.group(2)) / 1000, match.group(3)])
        elif current and line[:1] in ("\t", " "):
            current.append(line.strip())
        else:
            flush()
    flush()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="the late registration (the Nth file)")
    parser.add_argument("--early", type=int, default=10, help="the early registration (baseline)")
    parser.add_argument("--window", type=int, default=5, help="registrations timed around each (median)")
    parser.add_argument("--rows-per-file", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the 200th file against the 10th")
    args = parser.parse_args()
    if args.quick:
        args.files = 200

    root = _stack.workdir("p4")
    try:
        os.environ.update(_stack.airflow_home(root))
        with _stack.engines(root, clickhouse=False) as bench:
            report = measure(bench, args)
    finally:
        _stack.remove(root)
    print(report)


def measure(bench, args) -> str:
    from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_str
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.domain.tables import EVENTS
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.transfer.lake import ensure_table, register_files, table_columns

    half = args.window // 2
    if args.early - half < 1 or args.files <= args.early:
        raise SystemExit("--early must leave room for its window, and --files must be larger")
    windows = {"early": range(args.early - half, args.early - half + args.window),
               "late": range(args.files - half, args.files - half + args.window)}
    postgres = bench.stack.postgres
    log = postgres.root / "log"
    hook = DuckLakeHook()
    lakes = {}
    for name in windows:
        duckling = bench.new_duckling(1, f"p4-{name}")
        lakes[name] = (duckling, hook.storage(duckling))
    with hook.attach(*lakes["late"]) as con:
        ensure_table(con, EVENTS)
        columns = table_columns(con, EVENTS)

    def write_file(con, storage, n: int) -> tuple[Partition, str]:
        """A tiny Parquet file of the lake's columns for day ``n``, written by DuckDB into the bucket."""
        partition = Partition(1, FIRST_DAY + dt.timedelta(days=n))
        uri = storage.uri(partition.object_key(EVENTS.name, f"p4-{n}"))
        at = f"TIMESTAMPTZ {duckdb_str(f'{partition.day} 12:00:00+00')}"
        values = {"team_id": "1", "project_id": "1", EVENTS.day_column: f"{at} + INTERVAL (i) SECOND",
                  "uuid": "uuid()::VARCHAR"}
        select = ", ".join(
            f"CAST({values.get(name, 'NULL')} AS {kind}) AS {duckdb_ident(name)}" for name, kind in columns.items())
        con.execute(f"COPY (SELECT {select} FROM range({args.rows_per_file}) t(i)) TO {duckdb_str(uri)} (FORMAT parquet)")
        return partition, uri

    started = time.perf_counter()
    for name, (duckling, storage) in lakes.items():  # fill each lake up to its window, on one connection
        with hook.attach(duckling, storage) as con:
            for n in range(1, windows[name][0]):
                partition, uri = write_file(con, storage, n)
                register_files(con, EVENTS, partition, [uri], args.rows_per_file, storage.data_path)
        print(f"{name} lake: registered files 1-{windows[name][0] - 1} ({time.perf_counter() - started:.0f} s so far)",
              flush=True)

    times: dict[str, list[float]] = {"early": [], "late": []}
    attach_times: dict[str, list[float]] = {"early": [], "late": []}
    duck: dict[str, dict[str, float]] = {"early": defaultdict(float), "late": defaultdict(float)}
    for setting, value in PG_LOGGING.items():
        postgres.psql(f"ALTER SYSTEM SET {setting} = {value}")
    postgres.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    start_offset = log.stat().st_size
    for k in range(args.window):
        for name in (("early", "late") if k % 2 == 0 else ("late", "early")):
            duckling, storage = lakes[name]
            with hook.attach(duckling, storage) as con:
                partition, uri = write_file(con, storage, windows[name][k])
            begin = time.perf_counter()
            with hook.attach(duckling, storage) as con:
                attached = time.perf_counter()
                timed = _stack.Timed(con)
                register_files(timed, EVENTS, partition, [uri], args.rows_per_file, storage.data_path)
                done = time.perf_counter()
            attach_times[name].append(attached - begin)
            times[name].append(done - attached)
            for shape, seconds in timed.times.items():
                duck[name][shape] += seconds / args.window
    time.sleep(0.5)
    by_db = pg_statements(log, start_offset, log.stat().st_size)
    pg = {name: {k: v / args.window for k, v in by_db.get(lakes[name][0].db_name, {}).items()} for name in lakes}
    for setting in PG_LOGGING:
        postgres.psql(f"ALTER SYSTEM RESET {setting}")
    postgres.psql("SELECT pg_reload_conf()")
    for name in windows:
        print(f"file {args.early if name == 'early' else args.files} ± {half}: register_files "
              + ", ".join(f"{t * 1000:.0f}" for t in times[name]) + " ms", flush=True)

    early, late = _stack.median(times["early"]), _stack.median(times["late"])
    a_early, a_late = _stack.median(attach_times["early"]), _stack.median(attach_times["late"])
    ratio = late / early
    out = [
        f"\nP4 registration time vs files already in the lake (median of {args.window} registrations around each,"
        f" alternating between the two lakes; {time.perf_counter() - started:.0f} s)",
        _stack.table(
            ["step", f"file {args.early} (baseline)", f"file {args.files}", "ratio", "goal", "result"],
            [["register_files (schema check + swap)", f"{early * 1000:.0f} ms", f"{late * 1000:.0f} ms",
              f"{ratio:.2f}", f"≤ {GOAL}", _stack.verdict(ratio, GOAL)],
             ["attach (for reference)", f"{a_early * 1000:.0f} ms", f"{a_late * 1000:.0f} ms",
              f"{a_late / a_early:.2f}", "", ""],
             ["attach + register_files", f"{(a_early + early) * 1000:.0f} ms", f"{(a_late + late) * 1000:.0f} ms",
              f"{(a_late + late) / (a_early + early):.2f}", "", ""]]),
    ]
    for title, data in (("DuckDB statements lake.py sends (ms per registration)", duck),
                        ("PostgreSQL catalog statements (ms per registration)", pg)):
        shapes = set(data["early"]) | set(data["late"])
        grown = sorted(shapes, key=lambda s: data["late"].get(s, 0) - data["early"].get(s, 0), reverse=True)
        total_e, total_l = sum(data["early"].values()), sum(data["late"].values())
        rows = [[f"{data['early'].get(s, 0) * 1000:.1f}", f"{data['late'].get(s, 0) * 1000:.1f}",
                 f"{(data['late'].get(s, 0) - data['early'].get(s, 0)) * 1000:+.1f}", s] for s in grown[:10]]
        rows.append([f"{total_e * 1000:.1f}", f"{total_l * 1000:.1f}", f"{(total_l - total_e) * 1000:+.1f}",
                     f"(all {len(shapes)} statement shapes)"])
        out += [f"\n{title}, largest growth first", _stack.table(
            [f"file {args.early}", f"file {args.files}", "growth", "statement"], rows)]
    return "\n".join(out)


if __name__ == "__main__":
    main()
