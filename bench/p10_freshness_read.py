"""Freshness check's lake read: a current lake with years of daily files ÷ the same lake holding one day.

``duckling_freshness_check`` asks every lake, every hour, for its newest day. A duckling on the production
shape (PostgreSQL catalog, S3 data on moto) gets ``--days`` daily files of ``--rows`` events up to yesterday,
each registered by its own transaction as the daily runs do; a second duckling holds only yesterday. Timed,
median of ``--repeat``: :func:`airflow_provider_duckling.health.freshness.lake_latest_days` (attach included), and
on one open connection its newest-day query (a max over the whole history, which DuckDB answers from
DuckLake's per-file statistics) against the same query limited to a recent window (which must read the
window's files).

    .venv/bin/python bench/p10_freshness_read.py [--days 1100] [--rows 2000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from _stack import airflow_home, engines, median, remove, table, verdict, workdir
from p6_maintenance import _select_list


def _load(hook, duckling, storage, days: list[dt.date], rows: int) -> None:
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.domain.tables import EVENTS
    from airflow_provider_duckling.transfer.lake import register_files

    with hook.attach(duckling, storage) as con:
        for day in days:
            partition = Partition(duckling.team_id, day)
            uri = storage.uri(partition.object_key("events", "bench"))
            con.execute(f"COPY (SELECT {_select_list(day, duckling.team_id)} FROM "
                        f"(SELECT range AS i, {rows} AS n FROM range({rows}))) TO '{uri}' (FORMAT parquet)")
            register_files(con, EVENTS, partition, [uri], rows, storage.data_path)


def _timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1100)
    parser.add_argument("--rows", type=int, default=2000, help="events per day")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="100 days")
    args = parser.parse_args()
    days = 100 if args.quick else args.days

    root = workdir("p10")
    import os

    os.environ.update(airflow_home(root))
    try:
        with engines(root, clickhouse=False) as bench:
            from airflow_provider_duckling.common.quoting import duckdb_literal
            from airflow_provider_duckling.health.freshness import lake_latest_days
            from airflow_provider_duckling.hooks.ducklake import DuckLakeHook

            hook = DuckLakeHook()
            last_closed = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
            history = bench.new_duckling(1, "p10-history")
            single = bench.new_duckling(2, "p10-single")
            started = time.perf_counter()
            _load(hook, history, hook.storage(history), [last_closed - dt.timedelta(days=n) for n in range(days)], args.rows)
            _load(hook, single, hook.storage(single), [last_closed], args.rows)
            loading = time.perf_counter() - started
            settle = dt.timedelta(0)
            answers = {d.team_id: lake_latest_days(d, last_closed, settle)["events"] for d in (history, single)}
            check = {d.team_id: _timed(lambda d=d: lake_latest_days(d, last_closed, settle), args.repeat)
                     for d in (history, single)}

            end = dt.datetime.combine(last_closed + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
            whole = ("SELECT CAST(max(timestamp) AS DATE) FROM lake.posthog.events "
                     f"WHERE team_id = 1 AND timestamp < {duckdb_literal(end)}")
            windowed = f"{whole} AND timestamp >= {duckdb_literal(end - dt.timedelta(days=35))}"
            with hook.attach(history, read_only=True) as con:
                for sql in (whole, windowed):  # both warm: the comparison is of the reads, not of a cold cache
                    con.execute(sql).fetchone()
                query = {name: _timed(lambda sql=sql: con.execute(sql).fetchone(), args.repeat)
                         for name, sql in (("whole", whole), ("windowed", windowed))}
    finally:
        remove(root)

    ratio = check[1] / check[2]
    print(f"P10 freshness lake read: {days} daily files of {args.rows} rows vs 1, PostgreSQL catalog + S3 (moto); "
          f"loaded in {loading:.0f} s; newest day found: {answers[1]} / {answers[2]} (expected {last_closed})")
    print(table([f"figure (median of {args.repeat})", "value", "baseline", "ratio", "goal", ""], [
        (f"lake_latest_days, {days}-day lake ÷ 1-day lake (attach included)", f"{check[1] * 1000:.0f} ms",
         f"{check[2] * 1000:.0f} ms", f"{ratio:.2f}", "≤ 1.5", verdict(ratio, 1.5)),
        (f"its query on the {days}-day lake (max over the whole history) ÷ the same with a 35-day window",
         f"{query['whole'] * 1000:.1f} ms", f"{query['windowed'] * 1000:.1f} ms",
         f"{query['whole'] / query['windowed']:.2f}", "", "a window would read its files; the max is served "
         "from DuckLake's file statistics"),
    ]))


if __name__ == "__main__":
    main()
