"""P7: the cost of history. Export + register of one team-day for a team with years of events, against the
same day of a team that holds only that day.

Both teams' day has the same rows; the history team also has ``--days`` other days of the same size. Both
sides run the product's path on the same engines, in the same run, alternating which goes first: the export
task (the duckling's role, the schema pre-flight beside the row count, the INSERT INTO FUNCTION s3(), the
footers read back and checked against the count) and the register task (the role, attach, ``register_files``:
the swap of the day). Engines: chdb behind ClickHouse's HTTP interface (clickhouse-connect) on the
project's own ``events`` schema (primary key ``(team_id, toDate(timestamp), …)``, 8,192-row granules), moto
S3 and STS, a PostgreSQL catalog. Ratio = median of the history team ÷ median of the one-day team; goal ≤ 1.2.

It also prints ClickHouse's ``EXPLAIN indexes = 1`` granule counts of the exact SELECT the export sends for
both teams, and of the predicate the export used before (``toDate(timestamp) = day`` on a name that binds to
the SELECT's own ``… AS timestamp``), and times the bare export statement of the history team's day with each.

    .venv/bin/python bench/p7_history_cost.py [--days 1100] [--rows-per-day 10000] [--repeat 7] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time

import _stack

DAY = dt.date(2024, 1, 15)
HISTORY_TEAM, ONE_DAY_TEAM = 1, 2
GOAL = 1.2

#: The export's predicate before issue 12: bare names, which bind to the SELECT's aliases by default.
OLD_WHERE = ("WHERE team_id = {team_id:Int64}\n  AND toDate(timestamp) = {day:Date}\n"
             "  AND timestamp >= toDateTime64('1970-01-01 00:00:00', 6, 'UTC')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1100, help="days of history of the history team")
    parser.add_argument("--rows-per-day", type=int, default=10_000, help="rows of every team-day")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions per team (median)")
    parser.add_argument("--quick", action="store_true", help="1,000 days of 2,000 rows, 3 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.days, args.rows_per_day, args.repeat = 1000, 2000, 3
    _stack.print_measured("p7", measure, args.days, args.rows_per_day, args.repeat)


def _granules(clickhouse, select: str, params: dict) -> str:
    """``selected/total`` granules after the last index ClickHouse applied to ``select``."""
    text = "\n".join(str(r[0]) for r in clickhouse.query_rows(f"EXPLAIN indexes = 1\n{select}", params))
    return "/".join(re.findall(r"Granules: (\d+)/(\d+)", text)[-1])


def measure(bench, days: int, rows: int, repeat: int) -> str:
    from airflow_provider_duckling.common.heap import frozen_heap
    from airflow_provider_duckling.common.quoting import clickhouse_ident
    from airflow_provider_duckling.demo.sample_data import create_schema, insert_events
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.domain.tables import EVENTS
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.operators.base import Target
    from airflow_provider_duckling.operators.clickhouse_to_s3 import ClickHouseToDucklingS3Operator
    from airflow_provider_duckling.transfer.export import export_partition, export_statement, merged_settings
    from airflow_provider_duckling.transfer.lake import check_schema, ensure_table, register_files

    clickhouse = ClickHouseHook()
    create_schema(clickhouse)
    start = time.perf_counter()
    first = DAY - dt.timedelta(days=days // 2)  # the measured day sits inside the history
    insert_events(clickhouse, HISTORY_TEAM, first, rows, days=days)
    insert_events(clickhouse, ONE_DAY_TEAM, DAY, rows)
    ((history_rows,),) = clickhouse.query_rows(
        f"SELECT count() FROM {clickhouse_ident(clickhouse.database)}.events WHERE team_id = {{t:Int64}}", {"t": HISTORY_TEAM})
    clickhouse.execute(f"OPTIMIZE TABLE {clickhouse_ident(clickhouse.database)}.events FINAL")  # merged, as a long-lived table mostly is
    print(f"seeded and merged {history_rows:,} rows of team {HISTORY_TEAM} ({days:,} days) and {rows:,} of team {ONE_DAY_TEAM} "
          f"(one day) in {time.perf_counter() - start:.1f} s", flush=True)

    hook = DuckLakeHook()
    teams = {HISTORY_TEAM: bench.new_duckling(HISTORY_TEAM, "p7-history"), ONE_DAY_TEAM: bench.new_duckling(ONE_DAY_TEAM, "p7-day")}
    for duckling in teams.values():  # each lake and its table exist before the timed runs
        with hook.attach(duckling) as con:
            ensure_table(con, EVENTS)

    def one_run(team: int, i: int) -> dict[str, float]:
        """The export task, then the register task, as their execute() run them."""
        duckling, partition, times = teams[team], Partition(team, DAY), {}
        with frozen_heap():
            start = time.perf_counter()
            storage = hook.storage(duckling, will_attach=False)
            target = Target(partition, EVENTS, duckling, hook, storage, hook.settings(duckling))

            def preflight() -> None:
                if check_schema(EVENTS.lake_columns, ClickHouseToDucklingS3Operator._lake_columns(target, False)).incompatible:
                    raise RuntimeError("schema pre-flight failed")

            exported = export_partition(clickhouse, storage, EVENTS, partition, f"p7-{team}-{i}",
                                        merged_settings(None), preflight=preflight)
            times["export"] = time.perf_counter() - start
            start = time.perf_counter()
            storage = hook.storage(duckling)
            with hook.attach(duckling, storage) as con:
                result = register_files(con, EVENTS, partition, exported.files, exported.rows, storage.data_path)
            times["register"] = time.perf_counter() - start
        if exported.rows != rows or result.rows != rows:
            raise RuntimeError(f"team {team}: exported {exported.rows}, registered {result.rows}, expected {rows}")
        times["total"] = times["export"] + times["register"]
        return times

    one_run(HISTORY_TEAM, -1), one_run(ONE_DAY_TEAM, -1)  # warm-up: first statements load code paths
    runs: dict[int, list[dict[str, float]]] = {HISTORY_TEAM: [], ONE_DAY_TEAM: []}
    for i in range(repeat):
        order = (HISTORY_TEAM, ONE_DAY_TEAM) if i % 2 == 0 else (ONE_DAY_TEAM, HISTORY_TEAM)
        for team in order:  # alternate, so that drifting machine load hits both alike
            runs[team].append(one_run(team, i))
        h, o = runs[HISTORY_TEAM][-1], runs[ONE_DAY_TEAM][-1]
        print(f"repetition {i + 1}: history team {h['total']:.3f} s (export {h['export']:.3f}, register "
              f"{h['register']:.3f}); one-day team {o['total']:.3f} s (export {o['export']:.3f}, register "
              f"{o['register']:.3f})", flush=True)

    med = {team: {k: _stack.median([r[k] for r in rs]) for k in ("total", "export", "register")} for team, rs in runs.items()}
    ratio = med[HISTORY_TEAM]["total"] / med[ONE_DAY_TEAM]["total"]

    # What ClickHouse reads: the exact SELECT of the export statement, for both teams, and the old predicate;
    # then the bare export statement of the history team's day with each (query condition cache off, so that
    # a repeated filter is really evaluated again).
    storage = hook.storage(teams[HISTORY_TEAM], will_attach=False)

    def statements(team: int, key: str, settings: dict) -> tuple[str, str, dict]:
        """(export statement, the same with the old predicate, parameters)."""
        partition = Partition(team, DAY)
        sql, params = export_statement(clickhouse, storage, EVENTS, partition, partition.object_key("events", key), settings)
        where = sql[sql.index("WHERE"):sql.index("\nSETTINGS")]
        old = sql.replace(where, OLD_WHERE).replace(" AS ev\n", "\n").replace("ev.", "")
        return sql, old, params

    explained = []
    for team in (HISTORY_TEAM, ONE_DAY_TEAM):
        sql, old, params = statements(team, "explain", merged_settings(None))
        explained.append([f"team {team} ({'history' if team == HISTORY_TEAM else 'one day'})",
                          _granules(clickhouse, sql[sql.index("SELECT\n"):], params),
                          _granules(clickhouse, old[old.index("SELECT\n"):], params)])
    bare: dict[str, list[float]] = {"now": [], "before": []}
    for i in range(repeat):
        for name in ("now", "before") if i % 2 == 0 else ("before", "now"):
            sql, old, params = statements(HISTORY_TEAM, f"bare-{i}-{name}", merged_settings({"use_query_condition_cache": 0}))
            began = time.perf_counter()
            clickhouse.execute(sql if name == "now" else old, params)
            bare[name].append(time.perf_counter() - began)

    h, o = med[HISTORY_TEAM], med[ONE_DAY_TEAM]
    table = _stack.table(["team-day", "export+register", "export task", "register task", "÷ one-day team", "goal", "result"], [
        [f"history team ({days:,} days, {history_rows:,} rows)", f"{h['total']:.3f} s", f"{h['export']:.3f} s",
         f"{h['register']:.3f} s", f"{ratio:.3f}", f"≤ {GOAL}", _stack.verdict(ratio, GOAL)],
        ["one-day team", f"{o['total']:.3f} s", f"{o['export']:.3f} s", f"{o['register']:.3f} s", "1.000", "", ""],
    ])
    granules = _stack.table(["EXPLAIN indexes = 1, granules selected/total", "export SELECT now", "old predicate"], explained)
    counts = ", ".join(f"{name} {_stack.median(seconds) * 1000:.0f} ms" for name, seconds in bare.items())
    return (f"\nP7 cost of history: export + register of {DAY} ({rows:,} rows), chdb over HTTP, moto S3, "
            f"PostgreSQL catalog (median of {repeat})\n{table}\n\n{granules}\n\n"
            f"The bare export statement of the history team's day (median of {repeat}, query condition cache off): "
            f"{counts}")


if __name__ == "__main__":
    main()
