"""P11: a team's history back-filled in batches through a real Airflow, against the bare engine.

One Airflow 3 (scheduler, dag-processor, api-server, LocalExecutor with parallelism 4, export pool of 4
slots, PostgreSQL metadata DB: the machinery of P5, ``tests/support/airflow_stack.py``) runs the product's
DAG files against chdb behind ClickHouse's HTTP interface, moto S3/STS and PostgreSQL catalogs, all started
by the bench in a temp dir. The phases run one after the other on that one Airflow:

1. **Big history**: team 1 with ``--days`` (1,100) days × ``--rows`` (10,000) events is added to the
   registry (with an explicit ``start_date``); the clock runs from that registry write (the DAGs are created
   unpaused by the next parse) until every run of the team's two DAGs (events: ``[duckling]
   history_batch_months`` calendar months of history per run (3, a quarter, by default; ``--months``),
   then the top-up days; persons: one full export) has succeeded. ÷ the bare engine: the same days exported by
   one ``INSERT INTO FUNCTION s3(…/{_partition_id}/…) PARTITION BY <the day's directory> SELECT …`` (the
   product's own SELECT and settings, one Parquet file per day, to the same moto, base credentials, no STS),
   timed in the same run before Airflow starts (median of ``--bare-repeat``). Goal ≤ 5.
2. **Small days**: team 2, the same history with 100 events a day, the same way (fixed costs dominate).
3. **Metadata**: every table of the Airflow metadata DB counted before and after phases 1 and 2; the rows
   of the measured team's DAGs (tables with a ``dag_id`` or ``source_dag_id``), and their share of each
   table's growth in bytes (PostgreSQL sizes with indexes and TOAST, as P5 measures them), scaled to a
   team-year (× 365 ÷ days) and compared with P5's 18.6 rows and 16 KB per team-day run. Goal ≤ 1/20.
4. **Fairness**: three small teams (``SMALL_DAYS`` days × ``--small-rows`` events) are added to the idle
   Airflow, then, once caught up, each gets a triggered run of yesterday (what the top-up DAG creates, through
   the REST API); then a second big team starts its history and, once a quarter of its runs are done, three
   new small teams are added and the first three get the same triggered runs. Lag = from the registry write
   (new teams) or the trigger (top-ups) until yesterday's register task ended; idle vs under load.

First-seen: before each registry write the bench writes the discovery state file itself
(``DiscoveryState.first_seen = {team: now}``, :func:`save_discovery_state`), as a discovery pass would, so
each team's daily-from day is today − ``[duckling] topup_days`` (3) for events and today for persons.
``[duckling] settle_minutes`` = 0, as in P5. Only the runs of the teams' own DAGs are counted; the
housekeeping DAGs run meanwhile, as in production, and are left out (their failed runs are printed).
Each big team's lake is compared with ClickHouse day by day after the timed phases. For context it also
prints the bare export as one statement per calendar month (the statements the batch runs send) and into
local ``file()``s, and the old schedule's cost derived from P5 (1.93 s per one-day run).

    .venv/bin/python bench/p11_history_backfill.py [--days 1100] [--rows 10000] [--tiny-rows 100] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _stack import airflow_home, engines, median, remove, table, workdir

BIG, TINY, BIG_LOADED = 1, 2, 3
IDLE_SMALL, LOADED_SMALL = [11, 12, 13], [21, 22, 23]
SMALL_DAYS = 10
PERSONS = 50  # the sample events' distinct users (user-0 … user-49) as persons
DB = "airflow_p11"
GOAL_RATIO, GOAL_METADATA = 5.0, 1 / 20
#: P5 (docs/benchmarks.md): the old schedule's cost of one partition run — one team-day of one table.
OLD_SECONDS_PER_RUN, OLD_ROWS_PER_RUN, OLD_BYTES_PER_RUN = 1.93, 18.6, 16 * 1024
PREFIX = "manual__p11"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1100, help="days of history of the big teams")
    parser.add_argument("--rows", type=int, default=10_000, help="events per day of the big teams")
    parser.add_argument("--tiny-rows", type=int, default=100, help="events per day of the small-days team")
    parser.add_argument("--small-rows", type=int, default=1_000, help="events per day of the fairness teams")
    parser.add_argument("--bare-repeat", type=int, default=3, help="repetitions of each bare export (median)")
    parser.add_argument("--quick", action="store_true", help="120 days × 1,000 events, one bare repetition")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds each phase may take")
    parser.add_argument("--months", type=int, default=None,
                        help="[duckling] history_batch_months for this run (default: the setting's, 3)")
    args = parser.parse_args()
    if args.months is not None:
        os.environ["AIRFLOW__DUCKLING__HISTORY_BATCH_MONTHS"] = str(args.months)
    if args.quick:
        args.days, args.rows, args.bare_repeat = 120, 1_000, 1

    root = workdir("p11")
    os.environ.update(airflow_home(root))
    began = time.monotonic()
    try:
        with engines(root) as bench:
            print(measure(bench, args))
    finally:
        remove(root)
    print(f"\nbench wall time {time.monotonic() - began:.0f} s; load average at the end {os.getloadavg()[0]:.1f}")


# ---------------------------------------------------------------- ClickHouse: seed and the bare engine


def _seed(clickhouse, teams: dict[int, tuple[dt.date, int, int]]) -> None:
    """Events (``insert_events``: ``days`` × ``rows`` from ``first``) and 50 persons per team, merged."""
    from airflow_provider_duckling.common.quoting import clickhouse_ident
    from airflow_provider_duckling.demo.sample_data import create_schema, insert_events

    create_schema(clickhouse)
    db = clickhouse_ident(clickhouse.database)
    for team, (first, days, rows) in teams.items():
        insert_events(clickhouse, team, first, rows, days=days)
        at = {"team_id": team, "ts": f"{first} 12:00:00", "n": PERSONS}
        # The persons the sample events point at: person_id = reinterpretAsUUID(cityHash64(team, n % 50)).
        clickhouse.execute(
            f"INSERT INTO {db}.person (id, team_id, properties, is_identified, created_at, version, is_deleted, _timestamp) "
            "SELECT reinterpretAsUUID(cityHash64({team_id:Int64}, number)), {team_id:Int64}, "
            "concat('{\"email\": \"u', toString(number), '@example.com\"}'), 1, toDateTime64({ts:String}, 3, 'UTC'), 1, 0, "
            "toDateTime({ts:String}, 'UTC') FROM numbers({n:UInt64})", at)
        clickhouse.execute(
            f"INSERT INTO {db}.person_distinct_id2 (team_id, distinct_id, person_id, version, is_deleted, _timestamp) "
            "SELECT {team_id:Int64}, concat('user-', toString(number)), reinterpretAsUUID(cityHash64({team_id:Int64}, number)), "
            "1, 0, toDateTime({ts:String}, 'UTC') FROM numbers({n:UInt64})", at)
    for name in ("events", "person", "person_distinct_id2"):  # merged, as a long-lived table mostly is
        clickhouse.execute(f"OPTIMIZE TABLE {db}.{clickhouse_ident(name)} FINAL")


def _bare_export(bench, clickhouse, team: int, first: dt.date, end: dt.date, bucket: str, tag: str,
                 months: bool = False) -> tuple[float, int]:
    """(seconds, files) of the bare engine writing ``[first, end)`` of ``team`` as one Parquet file per day:
    one statement (``months``: one per calendar month, the statements a batch run sends), the product's
    SELECT, settings and day directories, base credentials. The files are deleted afterwards."""
    from airflow_provider_duckling.domain.history import next_month
    from airflow_provider_duckling.domain.tables import EVENTS, export_days_select
    from airflow_provider_duckling.transfer.batch import DAY_DIRECTORY
    from airflow_provider_duckling.transfer.export import merged_settings, settings_clause
    from tests.support.stack import BASE_AWS_KEY_ID, BASE_AWS_SECRET

    prefix = f"{tag}/events/team_id={team}/"
    sql = (f"INSERT INTO FUNCTION s3({{dest_url:String}}, {{dest_key_id:String}}, {{dest_secret:String}}, 'Parquet')\n"
           f"PARTITION BY {DAY_DIRECTORY}\n{export_days_select(EVENTS, clickhouse.database)}\n"
           f"{settings_clause(merged_settings(None))}")
    ranges, day = [], first
    while day < end:
        upto = min(next_month(day), end) if months else end
        ranges.append((day, upto))
        day = upto
    started = time.perf_counter()
    for a, b in ranges:
        clickhouse.execute(sql, {"dest_url": f"{bench.stack.moto.url}/{bucket}/{prefix}{{_partition_id}}/bare.parquet",
                                 "dest_key_id": BASE_AWS_KEY_ID, "dest_secret": BASE_AWS_SECRET,
                                 "team_id": team, "first": a.isoformat(), "end": b.isoformat()})
    seconds = time.perf_counter() - started
    keys = bench.stack.keys(bucket, prefix)
    s3 = bench.stack.s3()
    for n in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[n:n + 1000]]})
    return seconds, len(keys)


def _bare_local(clickhouse, team: int, first: dt.date, end: dt.date, directory: Path) -> tuple[float, int]:
    """(seconds, files) of the same one-statement export into local ``file()``s (no S3 at all), for context."""
    import shutil

    from airflow_provider_duckling.domain.tables import EVENTS, export_days_select
    from airflow_provider_duckling.transfer.batch import DAY_DIRECTORY
    from airflow_provider_duckling.transfer.export import merged_settings, settings_clause

    directory.mkdir(parents=True, exist_ok=True)
    sql = (f"INSERT INTO FUNCTION file({{dest_path:String}}, 'Parquet')\nPARTITION BY {DAY_DIRECTORY}\n"
           f"{export_days_select(EVENTS, clickhouse.database)}\n{settings_clause(merged_settings(None))}")
    started = time.perf_counter()
    clickhouse.execute(sql, {"dest_path": f"{directory}/{{_partition_id}}/bare.parquet", "team_id": team,
                             "first": first.isoformat(), "end": end.isoformat()})
    seconds = time.perf_counter() - started
    files = len(list(directory.rglob("*.parquet")))
    shutil.rmtree(directory, ignore_errors=True)
    return seconds, files


# ---------------------------------------------------------------- the Airflow deployment


@dataclass
class Deployment:
    """One Airflow on the bench's PostgreSQL, its registry and state files, and reads of its metadata DB."""

    bench: Any
    root: Path
    airflow: Any = None
    ducklings: dict[int, Any] = field(default_factory=dict)

    @property
    def registry(self) -> Path:
        return self.root / "p11-ducklings.yaml"

    @property
    def state(self) -> Path:
        return self.root / "p11-state.json"

    def start(self) -> None:
        from airflow_provider_duckling.registry.catalog import write_registry
        from airflow_provider_duckling.scheduling.airflow_env import DAGS_FOLDER
        from tests.support.airflow_stack import make_airflow_stack, new_metadata_db

        write_registry([], self.registry)
        url = new_metadata_db(self.bench.stack.postgres, DB)
        self.airflow = make_airflow_stack(self.root / "airflow-p11", dict(os.environ), url, {
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__DUCKLING__REGISTRY_PATH": str(self.registry),
            "AIRFLOW__DUCKLING__STATE_PATH": str(self.state),
            "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
            "AIRFLOW__DUCKLING__RETRY_DELAY_SECONDS": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }, export_pool_slots=4)
        self.airflow.start(api_first=True)
        self.wait("the housekeeping DAGs parsed", lambda: self.query(
            "SELECT count(*) FROM dag WHERE dag_id = 'duckling_topup_recent_days'")[0][0] == 1, 300)

    def stop(self) -> None:
        if self.airflow is not None:
            self.airflow.stop()

    def query(self, sql: str, *args: Any) -> list[tuple]:
        return self.bench.stack.postgres.query(sql, *args, database=DB)

    def wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(2)
        raise TimeoutError(f"{what}: not done after {timeout:.0f} s\nscheduler:\n{self.airflow.log_tail('scheduler')}")

    def add(self, ducklings: list[Any]) -> dt.datetime:
        """Record the teams as first seen now (as discovery would), then write them into the registry;
        returns when (the clock of what follows)."""
        from airflow_provider_duckling.registry.catalog import write_registry
        from airflow_provider_duckling.registry.state import load_discovery_state, save_discovery_state

        now = dt.datetime.now(dt.UTC)
        state = load_discovery_state(self.state)
        for duckling in ducklings:
            state.first_seen.setdefault(duckling.team_id, now.replace(microsecond=0))
        save_discovery_state(state, self.state)
        self.ducklings.update({d.team_id: d for d in ducklings})
        write_registry(list(self.ducklings.values()), self.registry)
        return dt.datetime.now(dt.UTC)

    def trigger(self, dag_id: str, run_id: str, partition_key: str | None = None,
                conf: dict[str, Any] | None = None) -> dt.datetime:
        """A run of one day, as the top-up DAG's TriggerDagRunOperator makes one (here through the REST API;
        no logical date, since the day's scheduled run exists); returns when it was asked for."""
        conf = conf if conf is not None else {"partition_key": partition_key}
        body = json.dumps({"dag_run_id": run_id, "logical_date": None, "conf": conf})
        request = urllib.request.Request(f"http://127.0.0.1:{self.airflow.port}/api/v2/dags/{dag_id}/dagRuns",
                                         data=body.encode(), method="POST", headers={"Content-Type": "application/json"})
        asked = dt.datetime.now(dt.UTC)
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
        return asked

    # -- runs

    def runs(self, dag_ids: list[str]) -> dict[str, dict[str, int]]:
        """dag_id → state → runs (the bench's own triggered runs left out)."""
        out: dict[str, dict[str, int]] = {d: {} for d in dag_ids}
        for dag_id, state, n in self.query(
                "SELECT dag_id, state, count(*) FROM dag_run WHERE dag_id = ANY(%s) AND run_id NOT LIKE %s GROUP BY 1, 2",
                dag_ids, PREFIX + "%"):
            out[dag_id][state] = n
        return out

    def caught_up(self, expected: dict[str, int]) -> bool:
        runs = self.runs(list(expected))
        failed = {d: s["failed"] for d, s in runs.items() if s.get("failed")}
        if any(failed.values()):
            raise RuntimeError(f"measured runs failed: {failed}\nscheduler:\n{self.airflow.log_tail('scheduler')}")
        return all(runs[d].get("success", 0) >= n for d, n in expected.items())

    def span(self, dag_ids: list[str]) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
        """(first version of the DAGs, first run's start, last run's end) of the measured runs."""
        ((parsed,),) = self.query("SELECT min(created_at) FROM dag_version WHERE dag_id = ANY(%s)", dag_ids)
        ((first, last),) = self.query("SELECT min(start_date), max(end_date) FROM dag_run WHERE dag_id = ANY(%s) "
                                      "AND run_id NOT LIKE %s", dag_ids, PREFIX + "%")
        return parsed, first, last

    def task_seconds(self, dag_ids: list[str]) -> dict[str, tuple[int, float]]:
        """task_id → (task instances, summed duration) of the measured runs."""
        return {task: (int(n), float(s or 0)) for task, n, s in self.query(
            "SELECT task_id, count(*), sum(duration) FROM task_instance WHERE dag_id = ANY(%s) AND run_id NOT LIKE %s "
            "GROUP BY 1 ORDER BY 1", dag_ids, PREFIX + "%")}

    def yesterday_registered(self, team: int, yesterday: dt.date) -> dt.datetime | None:
        """When the register task of the team's run of yesterday ended (a scheduled run or a top-up)."""
        from airflow_provider_duckling.domain.partitions import dag_id_for

        midnight = dt.datetime.combine(yesterday, dt.time(), tzinfo=dt.UTC)
        rows = self.query(
            "SELECT ti.end_date FROM task_instance ti JOIN dag_run r ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id "
            "WHERE ti.dag_id = %s AND ti.task_id = 'register' AND ti.state = 'success' AND r.data_interval_start = %s "
            "AND r.run_id NOT LIKE %s", dag_id_for("events", team), midnight, PREFIX + "%")
        return rows[0][0] if rows else None

    def triggered(self, dag_id: str, run_id: str) -> tuple[str | None, dt.datetime | None, dt.datetime | None]:
        """(run state, when the run was queued, when its register task ended)."""
        rows = self.query(
            "SELECT r.state, r.queued_at, ti.end_date FROM dag_run r LEFT JOIN task_instance ti ON ti.dag_id = r.dag_id "
            "AND ti.run_id = r.run_id AND ti.task_id = 'register' WHERE r.dag_id = %s AND r.run_id = %s", dag_id, run_id)
        return rows[0] if rows else (None, None, None)

    def batch_asset_event(self, team: int) -> tuple[str, dict[str, Any]] | None:
        """(partition key, extra) of the first asset event a history batch of the team's events emitted."""
        from airflow_provider_duckling.domain.partitions import dag_id_for

        rows = self.query("SELECT partition_key, extra::text FROM asset_event WHERE source_dag_id = %s "
                          "AND source_run_id LIKE 'scheduled%%' ORDER BY id LIMIT 1", dag_id_for("events", team))
        return (rows[0][0], json.loads(rows[0][1])) if rows else None

    def other_failures(self, dag_ids: list[str]) -> dict[str, int]:
        return dict(self.query("SELECT dag_id, count(*) FROM dag_run WHERE state = 'failed' AND NOT dag_id = ANY(%s) "
                               "GROUP BY 1", dag_ids))

    # -- the metadata database, table by table

    def tables(self) -> dict[str, tuple[int, int]]:
        """Every table of the metadata DB: (rows, bytes with indexes and TOAST)."""
        names = [r[0] for r in self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        out = {}
        for name in names:
            ((rows, size),) = self.query(f'SELECT count(*), pg_total_relation_size(%s) FROM "{name}"', f'public."{name}"')
            out[name] = (int(rows), int(size))
        return out

    def rows_of(self, dag_ids: list[str]) -> dict[str, int]:
        """Rows of ``dag_ids`` in every table that names a DAG (``dag_id``, or ``source_dag_id`` of asset events)."""
        columns: dict[str, str] = {}
        for name, column in self.query("SELECT table_name, column_name FROM information_schema.columns "
                                       "WHERE table_schema = 'public' AND column_name IN ('dag_id', 'source_dag_id') "
                                       "ORDER BY column_name"):
            columns.setdefault(name, column)
        out = {}
        for name, column in sorted(columns.items()):
            ((n,),) = self.query(f'SELECT count(*) FROM "{name}" WHERE "{column}" = ANY(%s)', dag_ids)
            if n:
                out[name] = int(n)
        return out


@dataclass
class Footprint:
    """What one back-fill left in the metadata DB: its DAGs' rows by table, and their share of each table's
    growth in bytes during the phase; tables that grew without naming a DAG are listed apart."""

    days: int
    rows: dict[str, int]
    bytes: dict[str, int]
    unattributed: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, days: int, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
           rows: dict[str, int]) -> Footprint:
        shares, other = {}, {}
        for name, (n_after, b_after) in after.items():
            n_before, b_before = before.get(name, (0, 0))
            grown_rows, grown_bytes = n_after - n_before, b_after - b_before
            if name in rows:
                share = min(1.0, rows[name] / grown_rows) if grown_rows > 0 else 1.0
                shares[name] = max(0, round(grown_bytes * share))
            elif grown_rows > 0:
                other[name] = (grown_rows, grown_bytes)
        return cls(days, rows, shares, other)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def per_year(self, value: float) -> float:
        return value * 365 / self.days


# ---------------------------------------------------------------- the phases


@dataclass
class Backfill:
    team: int
    rows_per_day: int
    runs: dict[str, int]
    added: dt.datetime
    parsed: dt.datetime
    first_start: dt.datetime
    last_end: dt.datetime
    tasks: dict[str, tuple[int, float]]
    footprint: Footprint | None = None

    @property
    def seconds(self) -> float:
        return (self.last_end - self.added).total_seconds()

    @property
    def from_first_start(self) -> float:
        return (self.last_end - self.first_start).total_seconds()


def _expected_runs(team: int, start: dt.date, today: dt.date) -> dict[str, int]:
    """Runs of each of the team's DAGs from ``start`` to yesterday: the count the timetables make."""
    from airflow_provider_duckling.domain.history import MONTH, WHOLE, catchup_runs, daily_from
    from airflow_provider_duckling.domain.partitions import dag_id_for
    from airflow_provider_duckling.registry.settings import history_batch_months, topup_days

    return {dag_id_for("events", team): catchup_runs(start, today, daily_from(today, topup_days()), MONTH,
                                                     history_batch_months()),
            dag_id_for("persons", team): catchup_runs(start, today, today, WHOLE)}


def _backfill(dep: Deployment, duckling, start: dt.date, today: dt.date, rows: int, days: int, timeout: float,
              footprint: bool = True) -> Backfill:
    expected = _expected_runs(duckling.team_id, start, today)
    dag_ids = list(expected)
    before = dep.tables() if footprint else {}
    added = dep.add([duckling])
    dep.wait(f"team {duckling.team_id}'s back-fill", lambda: dep.caught_up(expected), timeout)
    parsed, first, last = dep.span(dag_ids)
    result = Backfill(duckling.team_id, rows, expected, added, parsed, first, last, dep.task_seconds(dag_ids))
    if footprint:
        result.footprint = Footprint.of(days, before, dep.tables(), dep.rows_of(dag_ids))
    print(f"team {duckling.team_id}: {days:,} days × {rows:,} events back-filled in {result.seconds:.1f} s "
          f"({sum(expected.values())} runs; load average {os.getloadavg()[0]:.1f})", flush=True)
    return result


def _check_lake(duckling, clickhouse) -> str:
    """The lake's rows per day against ClickHouse's (after the timed phase)."""
    from airflow_provider_duckling.demo.report import lake_day_counts
    from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts

    lake, source = lake_day_counts(duckling, "events"), clickhouse_day_counts(clickhouse, duckling.team_id)
    if lake != source:
        wrong = [d for d in sorted(set(lake) | set(source)) if lake.get(d) != source.get(d)]
        raise RuntimeError(f"team {duckling.team_id}: {len(wrong)} day(s) differ from ClickHouse, e.g. {wrong[:3]}")
    return f"team {duckling.team_id}: lake = ClickHouse on all {len(lake):,} days ({sum(lake.values()):,} rows)"


@dataclass
class Lags:
    """Seconds from a small team's registry write to its yesterday registered, and from each triggered run
    of yesterday to its register task's end."""

    onboarding: dict[int, float] = field(default_factory=dict)
    triggered: dict[int, float] = field(default_factory=dict)
    queued: dict[int, float] = field(default_factory=dict)


def _onboard(dep: Deployment, ducklings: list, yesterday: dt.date) -> tuple[dt.datetime, dict[str, int]]:
    today = yesterday + dt.timedelta(days=1)
    expected = {}
    for duckling in ducklings:
        expected.update(_expected_runs(duckling.team_id, duckling.start_date, today))
    return dep.add(ducklings), expected


def _trigger_topups(dep: Deployment, teams: list[int], yesterday: dt.date, tag: str) -> dict[int, tuple[str, dt.datetime]]:
    from airflow_provider_duckling.domain.partitions import dag_id_for

    asked = {}
    for team in teams:
        run_id = f"{PREFIX}_{tag}_{team}"
        asked[team] = (run_id, dep.trigger(dag_id_for("events", team), run_id, f"{team}_{yesterday}"))
    return asked


def _triggered_done(dep: Deployment, asked: dict[int, tuple[str, dt.datetime]]) -> bool:
    from airflow_provider_duckling.domain.partitions import dag_id_for

    states = {team: dep.triggered(dag_id_for("events", team), run_id)[0] for team, (run_id, _) in asked.items()}
    if any(s == "failed" for s in states.values()):
        raise RuntimeError(f"a triggered top-up failed: {states}\nscheduler:\n{dep.airflow.log_tail('scheduler')}")
    return all(s == "success" for s in states.values())


def _record_triggered(dep: Deployment, asked: dict[int, tuple[str, dt.datetime]], lags: Lags) -> None:
    from airflow_provider_duckling.domain.partitions import dag_id_for

    for team, (run_id, when) in asked.items():
        _, queued, registered = dep.triggered(dag_id_for("events", team), run_id)
        lags.triggered[team] = (registered - when).total_seconds()
        lags.queued[team] = (registered - queued).total_seconds()


def _record_onboarding(dep: Deployment, teams: list[int], added: dt.datetime, yesterday: dt.date, lags: Lags) -> None:
    for team in teams:
        lags.onboarding[team] = (dep.yesterday_registered(team, yesterday) - added).total_seconds()


# ---------------------------------------------------------------- the bench


def measure(bench, args) -> str:
    from airflow_provider_duckling.domain.partitions import dag_id_for
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    first, small_first = today - dt.timedelta(days=args.days), today - dt.timedelta(days=SMALL_DAYS)
    clickhouse = ClickHouseHook()
    seeded = time.perf_counter()
    _seed(clickhouse, {BIG: (first, args.days, args.rows), TINY: (first, args.days, args.tiny_rows),
                       BIG_LOADED: (first, args.days, args.rows),
                       **{t: (small_first, SMALL_DAYS, args.small_rows) for t in IDLE_SMALL + LOADED_SMALL}})
    print(f"seeded and merged {2 * args.days:,} days × {args.rows:,} + {args.days:,} × {args.tiny_rows:,} events and "
          f"{len(IDLE_SMALL + LOADED_SMALL)} small teams in {time.perf_counter() - seeded:.0f} s "
          f"(history {first} … {yesterday})", flush=True)

    # The bare engine, before Airflow starts: the same days, one file per day, into the same moto.
    bare_bucket = "p11-bare"
    bench.stack.s3().create_bucket(Bucket=bare_bucket)
    bare: dict[str, list[float]] = {"big": [], "big_months": [], "tiny": []}
    files = {}
    for i in range(args.bare_repeat):
        for name, team, months in (("big", BIG, False), ("big_months", BIG, True), ("tiny", TINY, False)):
            seconds, files[name] = _bare_export(bench, clickhouse, team, first, today, bare_bucket, f"bare-{name}-{i}", months)
            bare[name].append(seconds)
        print(f"bare export {i + 1} (load average {os.getloadavg()[0]:.1f}): big {bare['big'][-1]:.2f} s ({files['big']} files), by month "
              f"{bare['big_months'][-1]:.2f} s, small days {bare['tiny'][-1]:.2f} s ({files['tiny']} files)", flush=True)
    bare_big, bare_months, bare_tiny = median(bare["big"]), median(bare["big_months"]), median(bare["tiny"])
    local = _bare_local(clickhouse, BIG, first, today, bench.root / "bare-files")
    print(f"bare export into local files: {local[0]:.2f} s ({local[1]} files)", flush=True)

    ducklings = {team: bench.stack.new_duckling(team, "p11", start_date=first) for team in (BIG, TINY, BIG_LOADED)}
    for team in IDLE_SMALL + LOADED_SMALL:
        ducklings[team] = bench.stack.new_duckling(team, "p11", start_date=small_first)
    dep = Deployment(bench, bench.root)
    measured = [dag_id_for(t, team) for team in ducklings for t in ("events", "persons")]
    idle, loaded = Lags(), Lags()
    try:
        started = time.perf_counter()
        dep.start()
        print(f"Airflow up in {time.perf_counter() - started:.0f} s", flush=True)
        big = _backfill(dep, ducklings[BIG], first, today, args.rows, args.days, args.timeout)
        tiny = _backfill(dep, ducklings[TINY], first, today, args.tiny_rows, args.days, args.timeout)

        # Fairness, idle: three small teams added, then a triggered run of yesterday for each.
        small = [ducklings[t] for t in IDLE_SMALL]
        added, expected = _onboard(dep, small, yesterday)
        dep.wait("the idle small teams", lambda: dep.caught_up(expected), args.timeout)
        _record_onboarding(dep, IDLE_SMALL, added, yesterday, idle)
        asked = _trigger_topups(dep, IDLE_SMALL, yesterday, "idle")
        dep.wait("the idle top-ups", lambda: _triggered_done(dep, asked), args.timeout)
        _record_triggered(dep, asked, idle)
        print(f"idle: small teams' yesterday registered {max(idle.onboarding.values()):.1f} s after being added at "
              f"most; triggered top-ups {max(idle.triggered.values()):.1f} s at most", flush=True)

        # Fairness under load: a second big history runs; a quarter in, new small teams and top-ups arrive.
        loaded_expected = _expected_runs(BIG_LOADED, first, today)
        big_added = dep.add([ducklings[BIG_LOADED]])
        quarter = max(1, sum(loaded_expected.values()) // 4)
        dep.wait("a quarter of the loaded back-fill", lambda: sum(
            s.get("success", 0) for s in dep.runs(list(loaded_expected)).values()) >= quarter, args.timeout)
        added, expected = _onboard(dep, [ducklings[t] for t in LOADED_SMALL], yesterday)
        asked = _trigger_topups(dep, IDLE_SMALL, yesterday, "loaded")
        dep.wait("the small teams under load", lambda: dep.caught_up(expected) and _triggered_done(dep, asked),
                 args.timeout)
        left = sum(loaded_expected.values()) - sum(s.get("success", 0) for s in dep.runs(list(loaded_expected)).values())
        _record_onboarding(dep, LOADED_SMALL, added, yesterday, loaded)
        _record_triggered(dep, asked, loaded)
        dep.wait("the loaded back-fill", lambda: dep.caught_up(loaded_expected), args.timeout)
        parsed, first_start, last_end = dep.span(list(loaded_expected))
        loaded_seconds = (last_end - big_added).total_seconds()
        print(f"under load: small teams' yesterday {max(loaded.onboarding.values()):.1f} s, top-ups "
              f"{max(loaded.triggered.values()):.1f} s at most; {left} of the big history's runs still to do then",
              flush=True)
        other_failed = dep.other_failures(measured)
        sample = dep.batch_asset_event(BIG)
    finally:
        dep.stop()
    checks = [_check_lake(ducklings[t], clickhouse) for t in (BIG, TINY, BIG_LOADED)]
    if sample:
        key, extra = sample
        checks.append(f"asset event of a batch day ({key}): rows {extra.get('rows')}, batch {extra.get('batch')} "
                      f"({extra.get('batch_days')} days, {extra.get('batch_rows')} rows, {extra.get('batch_files')} files), "
                      f"{len(json.dumps(extra)):,} bytes of JSON")
    checks.append(f"bare engine, the same statement into local files instead of S3 (one run, for context): "
                  f"{local[0]:.2f} s, {local[1]} files; the big team's back-fill ÷ that: {big.seconds / local[0]:.1f}")
    return _report(args, bare_big, bare_months, bare_tiny, files, big, tiny, idle, loaded, loaded_seconds, left,
                   other_failed, checks)


def _report(args, bare_big: float, bare_months: float, bare_tiny: float, files: dict[str, int], big: Backfill,
            tiny: Backfill, idle: Lags, loaded: Lags, loaded_seconds: float, left: int,
            other_failed: dict[str, int], checks: list[str]) -> str:
    days = args.days
    old_runs = 2 * days  # one run per team-day of each table
    out = [f"\nP11 history back-fill through a real Airflow (LocalExecutor, parallelism 4, export pool 4; PostgreSQL "
           f"metadata DB), {days:,} days of history, {os.cpu_count()} cores, "
           f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"]
    rows = []
    for result, bare, what in ((big, bare_big, f"{args.rows:,} events a day"), (tiny, bare_tiny, f"{args.tiny_rows:,} events a day")):
        ratio = result.seconds / bare
        rows.append([what, sum(result.runs.values()), f"{result.seconds:.1f} s", f"{result.from_first_start:.1f} s",
                     f"{bare:.2f} s", f"{ratio:.1f}", f"≤ {GOAL_RATIO:.0f}" if result is big else "",
                     ("PASS" if ratio <= GOAL_RATIO else "MISS") if result is big else ""])
    out.append(table(["team", "runs", "back-fill (registry write → last run)", "first run start → last run",
                      "bare engine, one statement", "ratio", "goal", ""], rows))
    old = OLD_SECONDS_PER_RUN * days
    out.append(f"bare engine, one statement per calendar month (what the batch runs send, no Airflow): {bare_months:.2f} s; "
               f"big team ÷ that: {big.seconds / bare_months:.1f}")
    out.append(f"derived, the old schedule: {OLD_SECONDS_PER_RUN} s (P5) × {days:,} events runs = {old:,.0f} s "
               f"({old / bare_big:.0f}× the bare engine); with its persons runs, {old_runs:,} runs = "
               f"{OLD_SECONDS_PER_RUN * old_runs:,.0f} s")
    for result in (big, tiny):
        parts = ", ".join(f"{task} {n} × {s / max(n, 1):.2f} s" for task, (n, s) in result.tasks.items())
        out.append(f"team {result.team}: DAGs created {(result.parsed - result.added).total_seconds():.1f} s after the "
                   f"registry write, first run started {(result.first_start - result.added).total_seconds():.1f} s after; "
                   f"task instances (count × mean duration): {parts}")

    fp, fp_tiny = big.footprint, tiny.footprint
    old_rows_year, old_bytes_year = OLD_ROWS_PER_RUN * 365, OLD_BYTES_PER_RUN * 365
    names = sorted(set(fp.rows) | set(fp_tiny.rows))
    out.append(f"\nAirflow metadata written for one team's {days:,}-day back-fill (both DAGs; rows naming the DAGs, "
               "their share of each table's growth on disk):")
    out.append(table(["table", f"rows (team {big.team})", "bytes", f"rows (team {tiny.team})", "rows per team-year"], [
        [name, fp.rows.get(name, 0), f"{fp.bytes.get(name, 0):,}", fp_tiny.rows.get(name, 0),
         f"{fp.per_year(fp.rows.get(name, 0)):.1f}"] for name in names
    ] + [["total", fp.total_rows, f"{fp.total_bytes:,}", fp_tiny.total_rows, f"{fp.per_year(fp.total_rows):.1f}"]]))
    rows_ratio = fp.per_year(fp.total_rows) / old_rows_year
    bytes_ratio = fp.per_year(fp.total_bytes) / old_bytes_year
    out.append(f"per team-year: {fp.per_year(fp.total_rows):,.0f} rows, {fp.per_year(fp.total_bytes) / 1024:,.0f} KB "
               f"(of which asset events, one per team-day: {fp.per_year(fp.rows.get('asset_event', 0)):,.0f} rows, "
               f"{fp.per_year(fp.bytes.get('asset_event', 0)) / 1024:,.0f} KB)")
    # Today's schedule made two runs per team-day of history, the events run and the persons run (the issue's
    # 2,204 runs for 1,100 days), each writing P5's rows and bytes per run.
    out.append(f"÷ the old schedule, two runs per team-day (events and persons) at P5's {OLD_ROWS_PER_RUN} rows and "
               f"16 KB per run ({2 * old_rows_year:,.0f} rows, {2 * old_bytes_year / 1024:,.0f} KB a team-year): rows "
               f"{rows_ratio / 2:.3f}, bytes {bytes_ratio / 2:.3f} (goal ≤ {GOAL_METADATA:.2f}): "
               f"{'PASS' if max(rows_ratio, bytes_ratio) / 2 <= GOAL_METADATA else 'MISS'}; against its events runs "
               f"alone: rows {rows_ratio:.3f}, bytes {bytes_ratio:.3f}")
    if fp.unattributed:
        out.append("tables that also grew, naming no DAG (rows, bytes; the whole deployment's): " + ", ".join(
            f"{name} {n} ({b:,})" for name, (n, b) in sorted(fp.unattributed.items())))

    out.append(f"\nFairness: yesterday of small teams ({SMALL_DAYS} days × {args.small_rows:,} events), seconds until "
               "its register task ended")
    out.append(table(["", "new team (from the registry write)", "triggered top-up (from the request)",
                      "triggered top-up (from its run's queueing)"], [
        [label, _spread(lags.onboarding), _spread(lags.triggered), _spread(lags.queued)]
        for label, lags in (("idle Airflow", idle), (f"while a {days:,}-day history runs", loaded))]))
    out.append(f"the loaded history had {left} of {sum(big.runs.values())} runs to do when the small teams' days were "
               f"registered; it took {loaded_seconds:.1f} s in all (alone: {big.seconds:.1f} s)")
    if other_failed:
        out.append("not measured, failed: " + ", ".join(f"{d} ({n})" for d, n in sorted(other_failed.items())))
    out.extend(checks)
    return "\n".join(out)


def _spread(values: dict[int, float]) -> str:
    """``median (min–max)`` of a few seconds."""
    if not values:
        return "-"
    v = sorted(values.values())
    return f"{median(v):.1f} s ({v[0]:.1f}–{v[-1]:.1f})"


if __name__ == "__main__":
    main()
