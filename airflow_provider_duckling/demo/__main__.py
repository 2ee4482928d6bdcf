"""The main job on embedded engines: a chdb ClickHouse with sample events and persons → local ducklings,
through the generated Airflow DAGs (start-date discovery, then each team's events and persons DAGs).
Prints, per team, table and day, rows in ClickHouse vs rows in the duckling.

    python -m airflow_provider_duckling.demo [--home .duckling] [--teams 3] [--days 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=".duckling", help="working directory for Airflow, chdb and the lakes")
    parser.add_argument("--teams", type=int, default=3)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    if home.exists():
        shutil.rmtree(home)
    (home / "airflow").mkdir(parents=True)

    from airflow_provider_duckling.scheduling.airflow_env import (
        DAGS_FOLDER,
        airflow_environment,
        connection_env,
        load_dags,
        migrate_db,
        run_day,
    )
    from airflow_provider_duckling.scheduling.dag_files import write_dag_files

    registry = home / "ducklings.yaml"
    # A checkout runs the repository's dags/; an installed package (no checkout) writes the same files into home.
    in_checkout = (DAGS_FOLDER / "duckling_backfill.py").is_file()
    env = airflow_environment(home / "airflow", registry, DAGS_FOLDER if in_checkout else write_dag_files(home / "dags"))
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"  # the demo prints its own progress; task logs stay in Airflow
    # The sample data is seeded at once, so nothing arrives late: with the default 120 minutes, yesterday's run
    # would wait for late events until 02:00 UTC.
    env["AIRFLOW__DUCKLING__SETTLE_MINUTES"] = "0"
    env.update([
        connection_env("clickhouse_default", "clickhouse", schema="posthog", extra={"chdb_path": str(home / "chdb")}),
        connection_env("ducklake_default", "ducklake", extra={"local_root": str(home / "lakes")}),
    ])
    os.environ.update(env)
    print(f"Preparing Airflow in {home / 'airflow'} …", flush=True)
    migrate_db(env)

    # Airflow is imported only now that its environment is set.
    from airflow_provider_duckling.demo.report import lake_day_counts, print_comparison
    from airflow_provider_duckling.demo.sample_data import clickhouse_scope_rows, seed_events, seed_persons
    from airflow_provider_duckling.domain.partitions import dag_id_for
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.registry.catalog import Duckling, write_registry
    from airflow_provider_duckling.scheduling.dag_factory import DISCOVERY_DAG_ID, TABLES

    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=n) for n in range(args.days, 0, -1)]
    teams = list(range(1, args.teams + 1))
    print(f"Seeding chdb with sample events and persons: teams {teams}, days {days[0]} … {days[-1]}", flush=True)
    clickhouse = ClickHouseHook()
    seed_events(clickhouse, teams, days)
    seed_persons(clickhouse, teams, days, per_day=5)
    # New ducklings: no start date given — discovery finds where each team's history starts.
    ducklings = [
        Duckling(
            team_id=t, bucket=f"duckling-team-{t}", bucket_region="us-east-1", db_host="localhost",
            db_name=f"duckling_team_{t}", cross_account_role_arn=f"arn:aws:iam::000000000000:role/duckling-{t}",
            cross_account_external_id=f"demo-external-id-{t}",
        )
        for t in teams
    ]
    write_registry(ducklings, registry)

    print(f"Running {DISCOVERY_DAG_ID} …", flush=True)
    if str(load_dags().get_dag(DISCOVERY_DAG_ID).test().state) != "success":
        print("start-date discovery failed", file=sys.stderr)
        return 1
    bag = load_dags()
    if bag.import_errors:
        print(f"DAG import errors: {bag.import_errors}", file=sys.stderr)
        return 1
    for duckling in ducklings:
        for table in TABLES:
            dag = bag.get_dag(dag_id_for(table, duckling.team_id))
            print(f"Running {dag.dag_id} (from {dag.start_date.date()}) for {days[0]} … {days[-1]}", flush=True)
            for day in days:
                run = run_day(dag, day)
                if str(run.state) != "success":
                    print(f"{dag.dag_id} {day}: run ended {run.state}", file=sys.stderr)
                    return 1

    ok = True
    rows = []
    for duckling in ducklings:
        for table in TABLES:
            in_lake = lake_day_counts(duckling, table)
            for day in days:
                expected = clickhouse_scope_rows(clickhouse, table, duckling.team_id, day)
                rows.append((duckling.team_id, table, day, expected, in_lake.get(day, 0)))
                ok &= expected == in_lake.get(day, 0)
    print_comparison(rows)
    print(f"\nLakes: {home / 'lakes'} (catalogs: <db_name>.ducklake, data: <bucket>/backfill/<table>/…)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
