"""P1: the worker's peak RSS should not grow with the team-day: no row is meant to cross the worker.

The worker is a fresh child process running what the export and register tasks run — assume the
duckling's role (moto STS), ``export_partition`` (a ClickHouse server over HTTP writes Parquet into moto S3)
and ``register_files`` (DuckDB + DuckLake, PostgreSQL catalog) — for a large and for a small team-day, each
run into a new duckling (the same first registration at both sizes). Its peak RSS comes from ``wait4()`` of
that child only, so the ClickHouse server (another process) is not counted; the child also reports its
peak after imports and after the export, to show which step grows. Ratio = peak RSS at the large size ÷ at
the small size, measured in the same run.

    .venv/bin/python bench/p1_worker_rss.py [--large 3000000] [--small 30000] [--runs 3]
        [--split-rows 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time

import _stack

DAY = dt.date(2024, 1, 15)
GOAL = 1.10


def _vm(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (VmHWM = peak RSS so far, VmRSS = now)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(spec: dict) -> None:
    """The child: import what a task imports, then export and register one team-day."""
    # What the tasks load anyway is loaded before the "after imports" figure: the package, the HTTP client,
    # the Amazon hook (boto3) and DuckDB's extensions.
    import clickhouse_connect  # noqa: F401
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook  # noqa: F401

    from airflow_provider_duckling.access.extensions import connect_duckdb
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.domain.tables import EVENTS
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.registry.catalog import Duckling
    from airflow_provider_duckling.transfer.export import export_partition
    from airflow_provider_duckling.transfer.lake import register_files

    connect_duckdb().close()
    after_imports = _vm("VmHWM")
    duckling = Duckling(**{**spec["duckling"], "start_date": None})
    partition = Partition(duckling.team_id, dt.date.fromisoformat(spec["day"]))
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    start = time.perf_counter()
    exported = export_partition(ClickHouseHook(), storage, EVENTS, partition, spec["token"])
    exported_at = time.perf_counter()
    after_export = _vm("VmHWM")
    with hook.attach(duckling, storage) as con:
        result = register_files(con, EVENTS, partition, exported.files, exported.rows, storage.data_path)
    done = time.perf_counter()
    print(json.dumps({
        "rows": result.rows, "files": len(exported.files), "bytes": exported.bytes,
        "hwm_imports_kib": after_imports, "hwm_export_kib": after_export, "hwm_kib": _vm("VmHWM"),
        "export_s": exported_at - start, "register_s": done - exported_at,
    }), flush=True)


def run_worker(spec: dict, env: dict[str, str]) -> dict:
    """Run one worker child; its own peak RSS (KiB) from ``wait4``, not any other process's."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
        out = process.stdout.read()
        process.stdout.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"worker failed ({process.returncode}):\n{stderr.read().decode(errors='replace')[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["maxrss_kib"] = usage.ru_maxrss
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=3_000_000, help="rows of the large team-day")
    parser.add_argument("--small", type=int, default=30_000, help="rows of the small team-day (baseline)")
    parser.add_argument("--runs", type=int, default=3, help="worker runs per size (median)")
    parser.add_argument("--split-rows", type=int, default=1_000_000,
                        help="also run the large day with [duckling] rows_per_file = this (0: skip)")
    parser.add_argument("--quick", action="store_true", help="300k vs 3k rows, one run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.quick:
        args.large, args.small, args.runs = 300_000, 3_000, 1

    root = _stack.workdir("p1")
    try:
        os.environ.update(_stack.airflow_home(root))
        with _stack.engines(root) as bench:
            from airflow_provider_duckling.demo.sample_data import create_schema, insert_events
            from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

            clickhouse = ClickHouseHook()
            create_schema(clickhouse)
            sizes = {"small": (1, args.small), "large": (2, args.large)}
            for team, rows in sizes.values():
                start = time.perf_counter()
                insert_events(clickhouse, team, DAY, rows)
                print(f"seeded team {team}: {rows:,} rows in {time.perf_counter() - start:.1f} s", flush=True)
            cases = [("small", {}), ("large", {})]
            if args.split_rows:
                cases.append(("large", {"AIRFLOW__DUCKLING__ROWS_PER_FILE": str(args.split_rows)}))
            results: dict[int, list[dict]] = {i: [] for i in range(len(cases))}
            for run in range(args.runs):
                for i, (size, extra) in enumerate(cases):
                    team, rows = sizes[size]
                    duckling = bench.new_duckling(team, f"p1-{i}-{run}")
                    spec = {"duckling": duckling.to_dict(), "day": DAY.isoformat(), "token": f"p1-{i}-{run}"}
                    result = run_worker(spec, {**os.environ, **extra})
                    if result["rows"] != rows:
                        raise RuntimeError(f"worker registered {result['rows']} rows, expected {rows}")
                    results[i].append(result)
                    print(f"run {run + 1}: {rows:>9,} rows, {result['files']} file(s): peak RSS "
                          f"{result['maxrss_kib'] / 1024:.0f} MiB (after imports {result['hwm_imports_kib'] / 1024:.0f}"
                          f" MiB, after export {result['hwm_export_kib'] / 1024:.0f} MiB), export "
                          f"{result['export_s']:.2f} s, register {result['register_s']:.2f} s", flush=True)
    finally:
        _stack.remove(root)

    def med(i: int, key: str) -> float:
        return _stack.median([r[key] for r in results[i]])

    base = med(0, "maxrss_kib")
    rows = []
    for i, (size, extra) in enumerate(cases):
        peak = med(i, "maxrss_kib")
        label = f"{sizes[size][1]:,} rows, {results[i][0]['files']} file(s)"
        if extra:
            label += f", rows_per_file={args.split_rows:,}"
        ratio = peak / base
        rows.append([label, f"{med(i, 'hwm_imports_kib') / 1024:.0f} MiB", f"{med(i, 'hwm_export_kib') / 1024:.0f} MiB",
                     f"{peak / 1024:.0f} MiB", f"{base / 1024:.0f} MiB", f"{ratio:.3f}", f"≤ {GOAL:.2f}",
                     "baseline" if i == 0 else _stack.verdict(ratio, GOAL)])
    print()
    print(f"P1 worker peak RSS (VmHWM after imports, after export, and the child's peak from wait4; "
          f"median of {args.runs} run(s))")
    print(_stack.table(["team-day", "imports", "+ export", "+ register (peak)", "baseline", "ratio", "goal",
                        "result"], rows))


if __name__ == "__main__":
    main()
