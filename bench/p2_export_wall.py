"""P2: export + register of a team-day, against ClickHouse writing the same Parquet file and nothing else.

Both sides run on the same engines, measured in the same run, in one of two set-ups (both by default):

* ``s3`` — the product's path: ClickHouse (chdb behind ClickHouse's HTTP interface, reached with
  clickhouse-connect) writes to moto's S3 over HTTP; the duckling's catalog is in PostgreSQL and its role
  is assumed through moto's STS;
* ``local`` — the embedded demo: in-process chdb writes local files; the catalog is a DuckDB file.

The baseline is the bare ``INSERT INTO FUNCTION s3(...)`` (or ``file(...)``) of the same export SELECT with
the same settings, to the same bucket. Ours is what the two tasks do: the export task (assume the role,
the schema pre-flight reading the catalog's metadata tables while the rows are counted, the same INSERT,
the footers read back), then the register task (assume the role, load DuckDB's extensions as a fresh task
process does, attach the duckling, ``register_files``: schema check, the swap transaction, row-count
check; then close the connection). Each repetition registers into its own lake whose table already exists
(the steady state: a new day in an existing lake). Ratio = median of ours ÷ median of the baseline; the
two alternate which runs first.
It ends with two figures from fresh connections and interpreters: loading the extensions, and what a new
task process would pay without ``heap.frozen_heap`` and ``quoting.duckdb_literal``.

    .venv/bin/python bench/p2_export_wall.py [--rows 1000000] [--repeat 15] [--storage s3|local|both] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("--repeat", type=int, default=15, help="timed repetitions (median)")
    parser.add_argument("--storage", choices=("s3", "local", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="100k rows, 3 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 100_000, 3
    reports = []
    for storage in ("s3", "local") if args.storage == "both" else (args.storage,):
        root = _stack.workdir(f"p2-{storage}")
        try:
            os.environ.update(_stack.airflow_home(root))
            with engines(root, storage) as new_duckling:
                reports.append(measure(storage, new_duckling, args.rows, args.repeat))
        finally:
            _stack.remove(root)
    print("\n".join(reports))


@contextlib.contextmanager
def engines(root, storage: str):
    """Connections for ``storage``; yields ``new_duckling(i)`` making a fresh duckling."""
    from airflow_provider_duckling.registry.catalog import Duckling

    if storage == "s3":
        with _stack.engines(root) as bench:
            yield lambda i: bench.new_duckling(1, f"p2-{i + 1}")
        return
    os.environ["AIRFLOW_CONN_CLICKHOUSE_DEFAULT"] = json.dumps(
        {"conn_type": "clickhouse", "schema": "posthog", "extra": {"chdb_path": str(root / "chdb")}})
    os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"] = json.dumps(
        {"conn_type": "ducklake", "extra": {"local_root": str(root / "lakes")}})
    yield lambda i: Duckling(1, f"p2-bucket-{i + 1}", "us-east-1", "localhost", f"p2_lake_{i + 1}",
                             "arn:aws:iam::000000000000:role/bench", "bench-external-id")


def measure(mode: str, new_duckling, rows: int, repeat: int) -> str:
    from airflow_provider_duckling.access.extensions import forget_hashes
    from airflow_provider_duckling.common.heap import frozen_heap
    from airflow_provider_duckling.demo.sample_data import create_schema, insert_events
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.domain.tables import EVENTS, export_select
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.operators.base import Target
    from airflow_provider_duckling.operators.clickhouse_to_s3 import ClickHouseToDucklingS3Operator
    from airflow_provider_duckling.transfer.export import export_partition, merged_settings, settings_clause
    from airflow_provider_duckling.transfer.lake import check_schema, ensure_table, register_files

    clickhouse = ClickHouseHook()
    create_schema(clickhouse)
    start = time.perf_counter()
    insert_events(clickhouse, 1, DAY, rows)
    print(f"[{mode}] seeded {rows:,} rows in {time.perf_counter() - start:.1f} s", flush=True)
    partition = Partition(1, DAY)
    hook = DuckLakeHook()
    select = f"{export_select(EVENTS, clickhouse.database)}\n{settings_clause(merged_settings(None))}"
    ducklings = [new_duckling(i) for i in range(-1, repeat)]
    for duckling in ducklings:  # each lake and its table exist before the timed runs
        with hook.attach(duckling) as con:
            ensure_table(con, EVENTS)

    def bare(i: int) -> float:
        storage = hook.storage(ducklings[i + 1])
        destination, params = storage.clickhouse_table_function(f"bare/{i}.parquet")
        storage.prepare(f"bare/{i}.parquet")
        params.update(team_id=1, day=DAY.isoformat())
        with frozen_heap():  # as our tasks run (the operators' execute does the same)
            start = time.perf_counter()
            clickhouse.execute(f"INSERT INTO FUNCTION {destination}\n{select}", params)
            return time.perf_counter() - start

    steps: dict[str, list[float]] = {}

    def export_task(i: int, timed_clickhouse, times: dict[str, float]):
        """What the export task's execute() does; its own heap frozen, as the operator freezes it."""
        duckling = ducklings[i + 1]
        with frozen_heap():
            start = time.perf_counter()
            export_storage = hook.storage(duckling, will_attach=False)
            times["export_role"] = time.perf_counter() - start

            target = Target(partition, EVENTS, duckling, hook, export_storage, hook.settings(duckling))

            def preflight() -> None:  # the export operator's own schema read, run alongside the row count
                began = time.perf_counter()
                problems = check_schema(EVENTS.lake_columns, ClickHouseToDucklingS3Operator._lake_columns(target, False))
                if problems.incompatible:
                    raise RuntimeError(f"schema pre-flight: {problems.incompatible}")
                times["preflight"] = time.perf_counter() - began

            exported = export_partition(timed_clickhouse, export_storage, EVENTS, partition, f"p2-{i}",
                                        preflight=preflight)
            times["export"] = time.perf_counter() - start
        return exported

    def register_task(i: int, exported, times: dict[str, float]):
        """What the register task's execute() does, closing the connection included (it writes the
        catalog's checkpoint)."""
        duckling = ducklings[i + 1]
        with frozen_heap():
            start = time.perf_counter()
            storage = hook.storage(duckling)
            with hook.attach(duckling, storage) as con:
                times["attach"] = time.perf_counter() - start
                timed_con = _stack.Timed(con)
                result = register_files(timed_con, EVENTS, partition, exported.files, exported.rows, storage.data_path)
            times["register"] = time.perf_counter() - start - times["attach"]
        if result.rows != rows:
            raise RuntimeError(f"registered {result.rows} rows, expected {rows}")
        return timed_con

    def ours(i: int) -> dict[str, float]:
        times: dict[str, float] = {}
        timed_clickhouse = _stack.Timed(clickhouse)  # statement times, for the breakdown below
        forget_hashes()  # each task is a fresh process: the extension files are hashed again
        exported = export_task(i, timed_clickhouse, times)
        forget_hashes()
        timed_con = register_task(i, exported, times)
        times["total"] = times["export"] + times["attach"] + times["register"]
        if i >= 0:
            for engine, timed in (("chdb", timed_clickhouse), ("duckdb", timed_con)):
                for sql, seconds in timed.times.items():
                    steps.setdefault(f"{engine}: {sql}", []).append(seconds)
        return times

    bare(-1), ours(-1)  # warm-up: first statements load chdb's and DuckDB's code paths
    bares: list[float] = []
    phases: dict[str, list[float]] = {}
    for i in range(repeat):
        # Alternate which goes first so that drifting machine load hits both sides alike.
        if i % 2:
            times = ours(i)
            bares.append(bare(i))
        else:
            bares.append(bare(i))
            times = ours(i)
        for name, seconds in times.items():
            phases.setdefault(name, []).append(seconds)
        print(f"[{mode}] repetition {i + 1}: bare {bares[-1]:.3f} s, export+register {times['total']:.3f} s "
              f"(export {times['export']:.3f} s, of which role {times['export_role']:.3f} s and pre-flight "
              f"{times['preflight']:.3f} s alongside the count; register: role+attach {times['attach']:.3f} s, "
              f"register_files {times['register']:.3f} s)", flush=True)

    b = _stack.median(bares)
    t, e, r_e, p, a, r = (_stack.median(phases[name]) for name in
                          ("total", "export", "export_role", "preflight", "attach", "register"))
    function = "s3()" if mode == "s3" else "file()"
    rows_out = [
        [f"bare chdb INSERT INTO FUNCTION {function} (baseline)", f"{b:.3f} s", f"{rows / b:,.0f}", "", "", ""],
        ["export task (role, schema pre-flight, count, INSERT, footers)", f"{e:.3f} s", f"{rows / e:,.0f}",
         f"{e / b:.3f}", "", ""],
        ["  of which assuming the role", f"{r_e:.3f} s", "", f"{r_e / b:.3f}", "", ""],
        ["  schema pre-flight (catalog metadata read, alongside the count)", f"{p:.3f} s", "", f"{p / b:.3f}", "", ""],
        ["register task: role, extensions, attach", f"{a:.3f} s", "", f"{a / b:.3f}", "", ""],
        ["register task: register_files, close", f"{r:.3f} s", "", f"{r / b:.3f}", "", ""],
        ["export + register", f"{t:.3f} s", f"{rows / t:,.0f}", f"{t / b:.3f}", f"≤ {GOAL}",
         _stack.verdict(t / b, GOAL)],
    ]
    where = ("S3 (moto over HTTP), PostgreSQL catalog, chdb over HTTP" if mode == "s3"
             else "embedded: in-process chdb, local files, DuckDB-file catalog")
    head = f"\nP2 [{mode}] export + register wall time, {rows:,}-row team-day, {where} (median of {repeat})\n"
    slowest = sorted(steps.items(), key=lambda item: -_stack.median(item[1]))[:8]
    breakdown = _stack.table(["median", "statement (of export_partition / register_files)"],
                             [[f"{_stack.median(v) * 1000:.0f} ms", k] for k, v in slowest])
    return head + _stack.table(["step", "wall", "rows/s", "÷ baseline", "goal", "result"], rows_out) + (
        "\n\nWhere our time goes, slowest statements:\n" + breakdown) + "\n\n" + extension_loading(
        hook.settings().extensions) + "\n" + fresh_process_costs()


def extension_loading(extensions: tuple[str, ...], repeat: int = 7) -> str:
    """A new connection with ``extensions`` loaded, as in a fresh task process: DuckDB verifying each file's
    signature (what every attach did before) against the pinned-hash check the hook uses now."""
    from airflow_provider_duckling.access.extensions import (
        _connect,
        connect_duckdb,
        extension_path,
        forget_hashes,
    )

    def signature_checked() -> float:
        start = time.perf_counter()
        con = _connect(allow_unsigned=False)
        for name in extensions:
            con.execute(f"LOAD '{extension_path(name)}'")
        elapsed = time.perf_counter() - start
        con.close()
        return elapsed

    def pinned() -> float:
        forget_hashes()
        start = time.perf_counter()
        con = connect_duckdb(extensions)
        elapsed = time.perf_counter() - start
        con.close()
        return elapsed

    checked = _stack.median([signature_checked() for _ in range(repeat)])
    ours = _stack.median([pinned() for _ in range(repeat)])
    return (f"Loading {', '.join(extensions)} in a fresh connection (median of {repeat}): DuckDB's signature check "
            f"{checked * 1000:.0f} ms, the pinned-hash check {ours * 1000:.0f} ms")


# Run in a new interpreter: what a task process has loaded before its task starts, then the two costs the
# package avoids (see airflow_provider_duckling.common.heap and airflow_provider_duckling.common.quoting).
FRESH_PROCESS = """
import gc, json, sys, time
import airflow.sdk.execution_time.task_runner
import airflow_provider_duckling.operators.clickhouse_to_s3, airflow_provider_duckling.operators.ducklake_register
import duckdb

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

out = {"objects": len(gc.get_objects())}
start = time.perf_counter(); gc.collect(); out["full_gc"] = time.perf_counter() - start
con = duckdb.connect()
start = time.perf_counter(); con.execute("SELECT 1").fetchall(); out["literal"] = time.perf_counter() - start
before = rss_mib()
start = time.perf_counter(); con.execute("SELECT ?", [1]).fetchall(); out["bound"] = time.perf_counter() - start
out["bound_mib"] = rss_mib() - before
out["pandas"] = "pandas" in sys.modules
print(json.dumps(out))
"""


def fresh_process_costs(repeat: int = 3) -> str:
    """What a fresh task process pays that the in-process runs above cannot show: a full garbage collection
    over what Airflow and the imports created, and DuckDB's first bound Python value."""
    import subprocess
    import sys

    runs = [json.loads(subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True,
                                      check=True).stdout) for _ in range(repeat)]
    m = {key: _stack.median([run[key] for run in runs]) for key in ("objects", "full_gc", "literal", "bound", "bound_mib")}
    return (f"A fresh task process, after Airflow's and the operators' imports (median of {repeat}): "
            f"{m['objects']:,.0f} objects tracked, a full garbage collection {m['full_gc'] * 1000:.0f} ms; DuckDB's "
            f"first statement {m['literal'] * 1000:.1f} ms with literals, {m['bound'] * 1000:.0f} ms and "
            f"+{m['bound_mib']:.0f} MiB with one bound Python value (pandas imported: {all(r['pandas'] for r in runs)})")


if __name__ == "__main__":
    main()
