"""P2: export + register of a team-day, against ClickHouse writing the same Parquet file and nothing else.

Both sides run on the same engines in this process, measured in the same run: embedded chdb (the
ClickHouse engine), local storage, and a local DuckLake.

* baseline: the bare ``INSERT INTO FUNCTION file(...)`` of the same export SELECT with the same settings;
* ours: what the two tasks do — ``export_partition`` (row count, the same INSERT, the footers read back),
  then attaching the duckling and ``register_files`` (schema check, the swap transaction, row-count check).

Each repetition registers into its own lake whose table already exists (the steady state: a new day in an
existing lake). Ratio = median of ours ÷ median of the baseline.

    .venv/bin/python bench/p2_export_wall.py [--rows 1000000] [--repeat 7] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time

import _stack

DAY = dt.date(2024, 1, 15)
GOAL = 1.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the team-day")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions (median)")
    parser.add_argument("--quick", action="store_true", help="100k rows, 3 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 100_000, 3

    root = _stack.workdir("p2")
    try:
        os.environ.update(_stack.airflow_home(root))
        os.environ["AIRFLOW_CONN_CLICKHOUSE_DEFAULT"] = json.dumps(
            {"conn_type": "clickhouse", "schema": "posthog", "extra": {"chdb_path": str(root / "chdb")}})
        os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"] = json.dumps(
            {"conn_type": "ducklake", "extra": {"local_root": str(root / "lakes")}})
        report = measure(root, args.rows, args.repeat)
    finally:
        _stack.remove(root)
    print(report)


def measure(root, rows: int, repeat: int) -> str:
    from airflow_provider_duckling.catalog import Duckling
    from airflow_provider_duckling.export import export_partition, merged_settings, settings_clause
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.lake import ensure_table, register_files
    from airflow_provider_duckling.partitions import Partition
    from airflow_provider_duckling.sample_data import create_schema, insert_events
    from airflow_provider_duckling.tables import EVENTS, export_select

    clickhouse = ClickHouseHook()
    create_schema(clickhouse)
    start = time.perf_counter()
    insert_events(clickhouse, 1, DAY, rows)
    print(f"seeded {rows:,} rows in {time.perf_counter() - start:.1f} s", flush=True)
    partition = Partition(1, DAY)
    hook = DuckLakeHook()
    bare_sql = (f"INSERT INTO FUNCTION file({{dest_path:String}}, 'Parquet')\n{export_select(EVENTS, clickhouse.database)}\n"
                f"{settings_clause(merged_settings(None))}")

    def bare(i: int) -> float:
        params = {"dest_path": str(root / f"bare-{i}.parquet"), "team_id": 1, "day": DAY.isoformat()}
        start = time.perf_counter()
        clickhouse.execute(bare_sql, params)
        return time.perf_counter() - start

    steps: dict[str, list[float]] = {}

    def ours(i: int) -> tuple[float, float, float, float]:
        duckling = Duckling(1, f"p2-bucket-{i}", "us-east-1", "localhost", f"p2_lake_{i}",
                            "arn:aws:iam::000000000000:role/bench", "bench-external-id")
        storage = hook.storage(duckling)
        with hook.attach(duckling, storage) as con:  # the lake and its table exist before the timed run
            ensure_table(con, EVENTS)
        timed_clickhouse = _stack.Timed(clickhouse)  # statement times, for the breakdown below
        start = time.perf_counter()
        exported = export_partition(timed_clickhouse, storage, EVENTS, partition, f"p2-{i}")
        exported_at = time.perf_counter()
        with hook.attach(duckling, storage) as con:
            attached = time.perf_counter()
            timed_con = _stack.Timed(con)
            result = register_files(timed_con, EVENTS, partition, exported.files, exported.rows, storage.data_path)
        done = time.perf_counter()
        if result.rows != rows:
            raise RuntimeError(f"registered {result.rows} rows, expected {rows}")
        if i >= 0:
            for engine, timed in (("chdb", timed_clickhouse), ("duckdb", timed_con)):
                for sql, seconds in timed.times.items():
                    steps.setdefault(f"{engine}: {sql}", []).append(seconds)
        return done - start, exported_at - start, attached - exported_at, done - attached

    bare(-1), ours(-1)  # warm-up: first statements load chdb's and DuckDB's code paths
    bares, totals, exports, attaches, registers = [], [], [], [], []
    for i in range(repeat):
        # Alternate which goes first so that drifting machine load hits both sides alike.
        if i % 2:
            total, export, attach, register = ours(i)
            bares.append(bare(i))
        else:
            bares.append(bare(i))
            total, export, attach, register = ours(i)
        totals.append(total)
        exports.append(export)
        attaches.append(attach)
        registers.append(register)
        print(f"repetition {i + 1}: bare {bares[-1]:.3f} s, export+register {total:.3f} s "
              f"(export {export:.3f} s, attach {attach:.3f} s, register_files {register:.3f} s)", flush=True)

    b, t = _stack.median(bares), _stack.median(totals)
    e, a, r = _stack.median(exports), _stack.median(attaches), _stack.median(registers)
    rows_out = [
        ["bare chdb INSERT INTO FUNCTION file() (baseline)", f"{b:.3f} s", f"{rows / b:,.0f}", "", "", ""],
        ["export_partition", f"{e:.3f} s", f"{rows / e:,.0f}", f"{e / b:.3f}", "", ""],
        ["attach the lake", f"{a:.3f} s", "", f"{a / b:.3f}", "", ""],
        ["register_files", f"{r:.3f} s", "", f"{r / b:.3f}", "", ""],
        ["export + register", f"{t:.3f} s", f"{rows / t:,.0f}", f"{t / b:.3f}", f"≤ {GOAL}",
         _stack.verdict(t / b, GOAL)],
    ]
    head = f"\nP2 export + register wall time, {rows:,}-row team-day (median of {repeat} repetitions)\n"
    slowest = sorted(steps.items(), key=lambda item: -_stack.median(item[1]))[:8]
    breakdown = _stack.table(["median", "statement (of export_partition / register_files)"],
                             [[f"{_stack.median(v) * 1000:.0f} ms", k] for k, v in slowest])
    return head + _stack.table(["step", "wall", "rows/s", "÷ baseline", "goal", "result"], rows_out) + (
        "\n\nWhere our time goes, slowest statements:\n" + breakdown)


if __name__ == "__main__":
    main()
