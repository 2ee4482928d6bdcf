"""P8: what a persons top-up costs. The top-up of one day in which 1,000 persons changed, for a team with
100× more persons (and their version history) ÷ the same day for a team that has only those 1,000.

Both teams get the same shape of history: every person has three older versions spread over the 90 days
before the day and two distinct_ids; on the day, 1,000 persons get a new version and 100 distinct_ids move
to another person. Both sides run the product's path on the same engines, in the same run, alternating which
goes first: the export (``INSERT INTO FUNCTION s3()`` of the day's changed distinct_ids, as of the day's end,
footers read back) and the register (attach, ``register_files``: the swap of the day) — after the team's full
export is in the lake, as in production. Engines: chdb behind ClickHouse's HTTP interface, moto S3 and STS, a
PostgreSQL catalog. Ratio = median large ÷ median small; goal ≤ 1.5.

    .venv/bin/python bench/p8_persons_topup.py [--multiple 100] [--changed 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import _stack

DAY = dt.date(2024, 6, 15)
SMALL, LARGE = 11, 12
GOAL = 1.5

_PERSONS = """
INSERT INTO {db}.person (id, team_id, properties, is_identified, created_at, version, is_deleted, _timestamp)
SELECT toUUID(concat(leftPad(toString({{team:Int64}}), 8, '0'), '-0000-4000-8000-', leftPad(hex(intDiv(number, 3)), 12, '0'))),
       {{team:Int64}}, concat('{{"email": "p', toString(intDiv(number, 3)), '@example.com", "v": ', toString(number % 3), '}}'),
       1, toDateTime64({{day:Date}} - 100, 3, 'UTC'), 1 + number % 3, 0,
       toDateTime({{day:Date}} - 90 + (number % 3) * 30 + intDiv(number, 3) % 29, 'UTC') + intDiv(number, 3) % 86000
FROM numbers({{n:UInt64}} * 3)
"""
_MAPPINGS = """
INSERT INTO {db}.person_distinct_id2 (team_id, distinct_id, person_id, version, is_deleted, _timestamp)
SELECT {{team:Int64}}, concat('d', toString(intDiv(number, 2)), '-', toString(number % 2)),
       toUUID(concat(leftPad(toString({{team:Int64}}), 8, '0'), '-0000-4000-8000-', leftPad(hex(intDiv(number, 2)), 12, '0'))),
       1, 0, toDateTime({{day:Date}} - 90 + intDiv(number, 2) % 29, 'UTC')
FROM numbers({{n:UInt64}} * 2)
"""
_DAY_PERSONS = """
INSERT INTO {db}.person (id, team_id, properties, is_identified, created_at, version, is_deleted, _timestamp)
SELECT toUUID(concat(leftPad(toString({{team:Int64}}), 8, '0'), '-0000-4000-8000-', leftPad(hex(number * {{step:UInt64}}), 12, '0'))),
       {{team:Int64}}, '{{"changed": true}}', 1, toDateTime64({{day:Date}} - 100, 3, 'UTC'), 10, 0,
       toDateTime({{day:Date}}, 'UTC') + 3600 + number
FROM numbers({{changed:UInt64}})
"""
_DAY_MOVES = """
INSERT INTO {db}.person_distinct_id2 (team_id, distinct_id, person_id, version, is_deleted, _timestamp)
SELECT {{team:Int64}}, concat('d', toString(number * 7 + 1), '-1'),
       toUUID(concat(leftPad(toString({{team:Int64}}), 8, '0'), '-0000-4000-8000-', leftPad(hex(number * 7 + 2), 12, '0'))),
       2, 0, toDateTime({{day:Date}}, 'UTC') + 7200 + number
FROM numbers({{moves:UInt64}})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changed", type=int, default=1000, help="persons changed on the day")
    parser.add_argument("--multiple", type=int, default=100, help="the large team has this many times more persons")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions per team (median)")
    args = parser.parse_args()
    _stack.print_measured("p8", measure, args.changed, args.multiple, args.repeat)


def measure(bench, changed: int, multiple: int, repeat: int) -> str:
    from airflow_provider_duckling.common.heap import frozen_heap
    from airflow_provider_duckling.common.quoting import clickhouse_ident
    from airflow_provider_duckling.demo.sample_data import create_schema
    from airflow_provider_duckling.domain.partitions import FullExport, Partition
    from airflow_provider_duckling.domain.tables import PERSONS
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.transfer.export import export_partition, merged_settings
    from airflow_provider_duckling.transfer.lake import register_files

    clickhouse = ClickHouseHook()
    create_schema(clickhouse)
    db = clickhouse_ident(clickhouse.database)
    sizes = {SMALL: changed, LARGE: changed * multiple}
    start = time.perf_counter()
    for team, n in sizes.items():
        params = {"team": team, "day": DAY.isoformat(), "n": n, "changed": changed, "step": n // changed,
                  "moves": changed // 10}
        for statement in (_PERSONS, _MAPPINGS, _DAY_PERSONS, _DAY_MOVES):
            clickhouse.execute(statement.format(db=db), params)
    totals = {team: clickhouse.query_rows(
        f"SELECT (SELECT count() FROM {db}.person WHERE team_id = {{t:Int64}}), "
        f"(SELECT count() FROM {db}.person_distinct_id2 WHERE team_id = {{t:Int64}})", {"t": team})[0] for team in sizes}
    print(f"seeded in {time.perf_counter() - start:.1f} s: " + "; ".join(
        f"team {t}: {p:,} person versions, {m:,} mapping versions" for t, (p, m) in totals.items()), flush=True)

    hook = DuckLakeHook()
    teams = {team: bench.new_duckling(team, f"p8-{team}") for team in sizes}
    for team, duckling in teams.items():  # the baseline: the team's full export, registered (not timed)
        storage = hook.storage(duckling)
        full = export_partition(clickhouse, storage, PERSONS, FullExport(team), f"p8-full-{team}", merged_settings(None))
        with hook.attach(duckling, storage) as con:
            register_files(con, PERSONS, FullExport(team), full.files, full.rows, storage.data_path)

    def one_run(team: int, i: int) -> tuple[dict[str, float], int]:
        duckling, partition, times = teams[team], Partition(team, DAY), {}
        with frozen_heap():
            began = time.perf_counter()
            storage = hook.storage(duckling, will_attach=False)
            exported = export_partition(clickhouse, storage, PERSONS, partition, f"p8-{team}-{i}", merged_settings(None))
            times["export"] = time.perf_counter() - began
            began = time.perf_counter()
            storage = hook.storage(duckling)
            with hook.attach(duckling, storage) as con:
                register_files(con, PERSONS, partition, exported.files, exported.rows, storage.data_path)
            times["register"] = time.perf_counter() - began
        times["total"] = times["export"] + times["register"]
        return times, exported.rows

    one_run(SMALL, -1), one_run(LARGE, -1)  # warm-up
    runs: dict[int, list[dict[str, float]]] = {SMALL: [], LARGE: []}
    rows: dict[int, int] = {}
    for i in range(repeat):
        for team in ((LARGE, SMALL) if i % 2 == 0 else (SMALL, LARGE)):
            times, rows[team] = one_run(team, i)
            runs[team].append(times)
        print(f"repetition {i + 1}: large {runs[LARGE][-1]['total']:.3f} s, small {runs[SMALL][-1]['total']:.3f} s",
              flush=True)
    med = {team: {k: _stack.median([r[k] for r in rs]) for k in ("total", "export", "register")} for team, rs in runs.items()}
    ratio = med[LARGE]["total"] / med[SMALL]["total"]
    table = _stack.table(["team", "persons", "day's rows", "export+register", "export", "register", "÷ small", "goal", "result"], [
        [f"large ({multiple}×)", f"{sizes[LARGE]:,}", f"{rows[LARGE]:,}", f"{med[LARGE]['total']:.3f} s",
         f"{med[LARGE]['export']:.3f} s", f"{med[LARGE]['register']:.3f} s", f"{ratio:.2f}", f"≤ {GOAL}",
         _stack.verdict(ratio, GOAL)],
        ["small (1×)", f"{sizes[SMALL]:,}", f"{rows[SMALL]:,}", f"{med[SMALL]['total']:.3f} s",
         f"{med[SMALL]['export']:.3f} s", f"{med[SMALL]['register']:.3f} s", "1.00", "", ""],
    ])
    reconciled = _reconciliation(clickhouse, teams, repeat)
    return (f"\nP8 persons top-up of {DAY}: {changed:,} persons changed and {changed // 10:,} distinct_ids moved "
            f"(median of {repeat})\n{table}\n{reconciled}")


def _reconciliation(clickhouse, teams: dict, repeat: int) -> str:
    """The reconciliation's persons comparison of the day, after its top-up: ClickHouse's current answers of the
    keys changed since the day, and the lake's latest rows of the day; large ÷ small, alternating."""
    from airflow_provider_duckling.health.reconcile import lake_latest_persons_days, source_persons_days
    from airflow_provider_duckling.health.tallies import attached

    def one(team: int) -> tuple[float, float, bool]:
        began = time.perf_counter()
        source, later = source_persons_days(clickhouse, team, DAY, DAY)
        middle = time.perf_counter()
        with attached(teams[team]) as con:
            lake = lake_latest_persons_days(con, team, DAY, DAY, later)
        return middle - began, time.perf_counter() - middle, source == lake

    one(SMALL), one(LARGE)  # warm-up
    times: dict[int, list[tuple[float, float, bool]]] = {SMALL: [], LARGE: []}
    for i in range(repeat):
        for team in ((LARGE, SMALL) if i % 2 == 0 else (SMALL, LARGE)):
            times[team].append(one(team))
    med = {t: (_stack.median([a for a, _, _ in r]), _stack.median([b for _, b, _ in r])) for t, r in times.items()}
    rows = []
    for team, label in ((LARGE, "large"), (SMALL, "small")):
        ch, lake = med[team]
        rows.append([label, f"{ch:.3f} s", f"{ch / med[SMALL][0]:.2f}", f"{lake:.3f} s", f"{lake / med[SMALL][1]:.2f}",
                     str(all(m for _, _, m in times[team]))])
    table = _stack.table(["team", "ClickHouse side", "÷ small", "lake side", "÷ small", "day matches"], rows)
    return f"Reconciliation's persons comparison of {DAY} (median of {repeat})\n{table}"


if __name__ == "__main__":
    main()
