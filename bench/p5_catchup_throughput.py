"""P5: catch-up of 3 teams × 30 days, one run per day, through a real Airflow (scheduler, dag-processor, api-server,
LocalExecutor on a PostgreSQL metadata DB), in partitions per minute, ÷ the same DAG shape with no-op tasks
run by the same kind of Airflow in the same run. Goal ≥ 0.7.

Both runs: one DAG per team and table (events, persons), daily data-interval schedule with catch-up from
the first day, ``max_active_runs=4`` (persons 1), ``wait_for_late_events >> export >> register``, export in the
``duckling_exports`` pool (4 slots), register one at a time per DAG. Ours moves real rows (chdb behind
ClickHouse's HTTP interface → moto S3 → DuckLake on PostgreSQL); the baseline's tasks return at once.
A partition is one successful DAG run; the rate is runs ÷ (last run's end − first run's start). P5 measures
the one-run-per-day path (top-ups, repairs, a history moved day by day): the teams are recorded as first seen
on their first day, so their daily-from day is before their history and no day is batched. History in
batches is P11's. Only the runs
of the DAGs measured count (the team DAGs, or their no-op twins): a housekeeping or operations DAG that runs
meanwhile (discovery, top-ups, the hourly freshness check) neither adds runs nor fails the bench; its failed
runs are printed as a note.

    .venv/bin/python bench/p5_catchup_throughput.py [--days 30] [--rows 200] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

from _stack import airflow_home, engines, remove, table, workdir

TEAMS = [1, 2, 3]

NOOP_DAGS = '''
import datetime as dt
from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import DAG, CronDataIntervalTimetable, task

START = dt.datetime.fromisoformat("{start}")
for team in {teams}:
    for table in ("events", "persons"):
        with DAG(dag_id=f"noop_{{table}}_team_{{team}}", schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
                 start_date=START, catchup=True, max_active_runs=1 if table == "persons" else 4,
                 is_paused_upon_creation=False,
                 default_args={{"retries": 3, "retry_delay": dt.timedelta(seconds=1)}}) as dag:
            wait = TimeDeltaSensor(task_id="wait_for_late_events", delta=dt.timedelta(0), mode="reschedule",
                                   poke_interval=300)

            @task(task_id="export", pool="duckling_exports")
            def export():
                return {{"rows": 0}}

            @task(task_id="register", max_active_tis_per_dag=1)
            def register(exported):
                return exported

            wait >> register(export())
'''


FOOTPRINT: dict[str, list[tuple[str, int, int]]] = {}


def measured_dags(name: str) -> list[str]:
    """The DAGs whose runs a catch-up measures: one per team and table, ours or the no-op baseline's."""
    from airflow_provider_duckling.domain.partitions import dag_id_for

    tables = ("events", "persons")
    if name == "noop":
        return [f"noop_{table}_team_{team}" for team in TEAMS for table in tables]
    return [dag_id_for(table, team) for team in TEAMS for table in tables]


OTHER_FAILURES: dict[str, dict[str, int]] = {}
"""Catch-up name → failed runs of DAGs not measured (housekeeping, operations), by DAG, for the report."""


def _runs(stack, dbname: str, dag_ids: list[str]) -> tuple[int, float | None]:
    """(successful runs, seconds from the first run's start to the last one's end), of ``dag_ids`` only.

    A failed run of one of them fails the bench; failed runs of other DAGs are only remembered
    (:data:`OTHER_FAILURES`): they are not what is measured."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user=stack.postgres.user,
                            password=stack.postgres.password, dbname=dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), min(start_date), max(end_date) FROM dag_run "
                        "WHERE state = 'success' AND dag_id = ANY(%s)", (dag_ids,))
            done, first, last = cur.fetchone()
            cur.execute("SELECT dag_id, count(*) FROM dag_run WHERE state = 'failed' GROUP BY dag_id")
            failed_by_dag = dict(cur.fetchall())
    finally:
        conn.close()
    failed = sum(n for dag_id, n in failed_by_dag.items() if dag_id in dag_ids)
    if failed:
        raise RuntimeError(f"{failed} measured run(s) failed in {dbname}")
    OTHER_FAILURES[dbname] = {dag_id: n for dag_id, n in failed_by_dag.items() if dag_id not in dag_ids}
    return int(done), (last - first).total_seconds() if first and last else None


#: The metadata tables a partition's run writes to (and that ``airflow db clean`` trims).
RUN_TABLES = ("dag_run", "task_instance", "task_instance_history", "xcom", "rendered_task_instance_fields",
              "asset_event", "dagrun_asset_event", "log", "task_reschedule", "job")


def _footprint(stack, dbname: str) -> list[tuple[str, int, int]]:
    """(table, rows, bytes on disk with indexes and TOAST) of :data:`RUN_TABLES` after a catch-up."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user=stack.postgres.user,
                            password=stack.postgres.password, dbname=dbname)
    out = []
    try:
        with conn.cursor() as cur:
            for name in RUN_TABLES:
                cur.execute("SELECT to_regclass(%s)", (name,))
                if cur.fetchone()[0] is None:
                    continue
                cur.execute(f'SELECT count(*), pg_total_relation_size(%s) FROM "{name}"', (name,))
                rows, size = cur.fetchone()
                out.append((name, int(rows), int(size)))
    finally:
        conn.close()
    return out


def _catch_up(bench, name: str, dags_folder: Path, registry: Path, expected: int, timeout: float) -> tuple[int, float]:
    from tests.support.airflow_stack import make_airflow_stack, new_metadata_db

    stack = bench.stack
    dbname = f"airflow_{name}"
    url = new_metadata_db(stack.postgres, dbname)
    airflow = make_airflow_stack(bench.root / name, dict(os.environ), url, {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
        "AIRFLOW__DUCKLING__RETRY_DELAY_SECONDS": "1",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }, export_pool_slots=4)
    airflow.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, seconds = _runs(stack, dbname, measured_dags(name))
            if done >= expected:
                FOOTPRINT[name] = _footprint(stack, dbname)
                return done, seconds or 0.0
            time.sleep(5)
        raise TimeoutError(f"{name}: {done} of {expected} runs after {timeout:.0f} s")
    finally:
        airflow.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=200, help="events per team-day")
    parser.add_argument("--quick", action="store_true", help="5 days")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    days = 5 if args.quick else args.days

    root = workdir("p5")
    os.environ.update(airflow_home(root))
    try:
        with engines(root) as bench:
            from airflow_provider_duckling.demo.sample_data import create_schema, insert_events
            from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
            from airflow_provider_duckling.registry.catalog import write_registry
            from airflow_provider_duckling.scheduling.airflow_env import DAGS_FOLDER

            last = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
            first = last - dt.timedelta(days=days - 1)
            clickhouse = ClickHouseHook()
            create_schema(clickhouse)
            for team in TEAMS:
                for n in range(days):
                    insert_events(clickhouse, team, first + dt.timedelta(days=n), args.rows)
            ducklings = [bench.stack.new_duckling(team, "p5", start_date=first) for team in TEAMS]
            registry = root / "p5-ducklings.yaml"
            write_registry(ducklings, registry)
            from airflow_provider_duckling.registry.state import DiscoveryState, save_discovery_state

            seen = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)  # every day a run of its own (see above)
            save_discovery_state(DiscoveryState(first_seen=dict.fromkeys(TEAMS, seen)),
                                 registry.with_name("duckling_state.json"))
            noop_folder = root / "noop-dags"
            noop_folder.mkdir()
            start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC).isoformat()
            (noop_folder / "noop_shape.py").write_text(NOOP_DAGS.format(start=start, teams=TEAMS))

            expected = len(TEAMS) * 2 * days
            base_runs, base_seconds = _catch_up(bench, "noop", noop_folder, registry, expected, args.timeout)
            our_runs, our_seconds = _catch_up(bench, "duckling", DAGS_FOLDER, registry, expected, args.timeout)
    finally:
        remove(root)

    base_rate, our_rate = base_runs / base_seconds * 60, our_runs / our_seconds * 60
    ratio = our_rate / base_rate
    print(f"P5 catch-up: {len(TEAMS)} teams × {days} days × 2 tables = {expected} partitions, {args.rows} events "
          "per team-day, LocalExecutor (parallelism 4), export pool 4")
    print(table(["", "runs", "seconds", "partitions/min"], [
        ("no-op tasks (baseline)", base_runs, f"{base_seconds:.0f}", f"{base_rate:.1f}"),
        ("duckling export + register", our_runs, f"{our_seconds:.0f}", f"{our_rate:.1f}"),
    ]))
    print(f"ratio {ratio:.2f} (goal ≥ 0.70): {'PASS' if ratio >= 0.7 else 'MISS'}")
    for dbname, failures in sorted(OTHER_FAILURES.items()):
        if failures:
            print(f"note: not measured, failed in {dbname}: "
                  + ", ".join(f"{dag_id} ({n})" for dag_id, n in sorted(failures.items())))
    ours = FOOTPRINT.get("duckling", [])
    total_rows, total_bytes = sum(r for _, r, _ in ours), sum(b for _, _, b in ours)
    print(f"\nAirflow metadata written by our catch-up ({our_runs} runs; PostgreSQL sizes include indexes and TOAST, "
          "and a table's first pages):")
    print(table(["table", "rows", "rows per run", "bytes", "bytes per run"], [
        (name, rows, f"{rows / our_runs:.2f}", f"{size:,}", f"{size / our_runs:,.0f}") for name, rows, size in ours
    ] + [("total", total_rows, f"{total_rows / our_runs:.2f}", f"{total_bytes:,}", f"{total_bytes / our_runs:,.0f}")]))


if __name__ == "__main__":
    main()
