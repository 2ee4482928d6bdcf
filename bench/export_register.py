"""Export + register throughput of one team-day on embedded engines (chdb → local DuckLake).

Prints export rows/s, registration time per file, and the ratio of our export to the bare chdb
``INSERT INTO FUNCTION file(...)`` of the same rows, measured in the same run.

    .venv/bin/python bench/export_register.py [--rows 300000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="duckling-bench-"))
    os.environ["AIRFLOW_HOME"] = str(work / "airflow")
    os.environ["AIRFLOW_CONN_CLICKHOUSE_DEFAULT"] = (
        '{"conn_type": "clickhouse", "schema": "posthog", "extra": {"chdb_path": "%s"}}' % (work / "chdb")
    )
    os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"] = '{"conn_type": "ducklake", "extra": {"local_root": "%s"}}' % (work / "lakes")

    from airflow_provider_duckling.catalog import Duckling
    from airflow_provider_duckling.export import export_partition
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.lake import register_files
    from airflow_provider_duckling.partitions import Partition
    from airflow_provider_duckling.quoting import clickhouse_str
    from airflow_provider_duckling.sample_data import create_schema, insert_events
    from airflow_provider_duckling.tables import EVENTS, export_select

    day = dt.date(2024, 1, 15)
    clickhouse = ClickHouseHook()
    create_schema(clickhouse)
    insert_events(clickhouse, 1, day, args.rows)
    duckling = Duckling(1, "bench-bucket", "us-east-1", "localhost", "bench_lake",
                        "arn:aws:iam::000000000000:role/bench", "bench-external-id")
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    partition = Partition(1, day)

    bare, ours, register = [], [], []
    for i in range(args.repeat):
        path = work / f"bare-{i}.parquet"
        start = time.perf_counter()
        clickhouse.execute(
            f"INSERT INTO FUNCTION file({clickhouse_str(str(path))}, 'Parquet') {export_select(EVENTS, 'posthog')} "
            "SETTINGS output_format_parquet_compression_method = 'zstd', output_format_parquet_string_as_string = 1",
            {"team_id": 1, "day": day.isoformat()},
        )
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        exported = export_partition(clickhouse, storage, EVENTS, partition, f"bench-{i}")
        ours.append(time.perf_counter() - start)
        with hook.attach(duckling, storage) as con:
            start = time.perf_counter()
            register_files(con, EVENTS, partition, exported.files, exported.rows, storage.data_path)
            register.append(time.perf_counter() - start)

    b, o, r = statistics.median(bare), statistics.median(ours), statistics.median(register)
    print(f"rows per team-day           {args.rows:>12,}")
    print(f"bare chdb INSERT (baseline) {b:>12.3f} s")
    print(f"export_partition            {o:>12.3f} s   {args.rows / o:,.0f} rows/s   ratio {o / b:.2f}")
    print(f"register (swap, 1 file)     {r:>12.3f} s")


if __name__ == "__main__":
    main()
