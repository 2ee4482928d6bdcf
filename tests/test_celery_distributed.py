"""A real distributed run (issue 15, point 2): the CeleryExecutor with a Redis broker, two ``airflow celery
worker`` processes, the metadata DB on PostgreSQL, and the api-server, scheduler and dag-processor, all on
loopback. Three teams × three days catch up spread over both workers, each day exactly once; then a worker
is SIGKILLed (with every process under it, as when its machine dies) while its export's upload is in
flight, and the retry on the other worker leaves the day exact: nothing lost, nothing doubled, the dead
attempt's object never registered. No log of the deployment holds a secret.

Nothing is mocked. The "machines" share one host: each worker reports its own name as the task instance's
hostname (``[core] hostname_callable``), which is how the test sees who ran what.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling, write_registry
from airflow_provider_duckling.scheduling.dag_factory import dag_id_for
from airflow_provider_duckling.transfer.lake import qualified
from tests.conftest import SESSION_DIR
from tests.support.airflow_stack import new_metadata_db
from tests.support.celery_stack import CeleryStack, make_celery_stack
from tests.support.faulty_proxy import FaultyProxy
from tests.support.stack import BASE_AWS_SECRET, CATALOG_PASSWORD, CLICKHOUSE_PASSWORD

CATCHUP_TEAMS, KILL_TEAM = [310, 311, 312], 313  # team ids no other test uses (ClickHouse is shared)
DAYS, KILL_ROWS = 3, 60_000  # the killed day: a Parquet file of a few MB, so its upload can be held mid-way
WORKERS = ("w1", "w2")
DB = "airflow_celery"


def _query(stack: Any, sql: str, *args: Any) -> list[tuple]:
    """Read this deployment's Airflow metadata database."""
    return stack.postgres.query(sql, *args, database=DB)


def _run_states(stack: Any, dag_ids: list[str]) -> dict[tuple[str, dt.date], str]:
    rows = _query(stack, "SELECT dag_id, data_interval_start, state FROM dag_run WHERE dag_id = ANY(%s)", dag_ids)
    return {(dag_id, start.date()): state for dag_id, start, state in rows}


def _wait_for_runs(stack: Any, celery: CeleryStack, expected: set[tuple[str, dt.date]], timeout: float) -> None:
    """Until every expected run succeeded; fails at once on a failed run."""
    deadline, states = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        states = _run_states(stack, sorted({dag_id for dag_id, _ in expected}))
        if any(states.get(key) == "failed" for key in expected) or all(states.get(k) == "success" for k in expected):
            break
        time.sleep(2)
    assert {k: states.get(k) for k in expected} == dict.fromkeys(expected, "success"), (
        f"scheduler:\n{celery.log_tail('scheduler')}\n" + "\n".join(
            f"{name}:\n{celery.log_tail('worker-' + name)}" for name in celery.workers))


@dataclass
class LakeView:
    """What one duckling's events lake holds for its team, read in one attach."""

    day_rows: dict[dt.date, int]
    rows: int
    distinct_uuids: int
    live_files: list[str]

    def live_on(self, team_id: int, day: dt.date) -> list[str]:
        prefix = Partition(team_id, day).prefix("events")
        return [f for f in self.live_files if prefix in f]


def _lake(duckling: Duckling) -> LakeView:
    table, team = qualified(EVENTS), duckdb_literal(duckling.team_id)
    day = duckdb_ident(EVENTS.day_column)
    with DuckLakeHook().attach(duckling) as con:
        days = con.execute(f"SELECT CAST({day} AS DATE), count(*) FROM {table} WHERE team_id = {team} GROUP BY 1")
        day_rows = {d: int(n) for d, n in days.fetchall()}
        rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT uuid) FROM {table} WHERE team_id = {team}"
                                     ).fetchone()
        files = con.execute("SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')")
        return LakeView(day_rows, rows, distinct, [f for (f,) in files.fetchall()])


def _object_rows(stack: Any, bucket: str, key: str, tmp_path: Path) -> int:
    """Rows of one Parquet object of the bucket, read on its own (not through the lake)."""
    import duckdb

    local = tmp_path / key.rsplit("/", 1)[1]
    stack.s3().download_file(bucket, key, str(local))
    with duckdb.connect() as con:
        return con.execute("SELECT count(*) FROM read_parquet(?)", [str(local)]).fetchone()[0]


def _airflow(celery: CeleryStack, *args: str) -> None:
    result = celery.airflow.airflow(*args)
    assert result.returncode == 0, result.stderr[-2000:]


@dataclass
class Deployment:
    """The running deployment and what the test gave it."""

    stack: Any
    celery: CeleryStack
    proxy: FaultyProxy
    days: list[dt.date]
    catchup: list[Duckling]
    victim_lake: Duckling
    started: float

    @property
    def yesterday(self) -> dt.date:
        return self.days[-1]

    def query(self, sql: str, *args: Any) -> list[tuple]:
        return _query(self.stack, sql, *args)


@pytest.fixture(scope="module")
def deployment(stack: Any) -> Iterator[Deployment]:
    """Broker, metadata DB, api-server, scheduler, dag-processor and two Celery workers, with the three
    catch-up teams' events DAGs running (persons and housekeeping DAGs paused: 2 cores) and the kill team's
    DAG paused until its test."""
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    days = [yesterday - dt.timedelta(days=n) for n in reversed(range(DAYS))]
    ch = ClickHouseHook()
    for team in CATCHUP_TEAMS:
        for index, day in enumerate(days):
            insert_events(ch, team, day, 100 + 17 * index + team % 10)
    insert_events(ch, KILL_TEAM, yesterday, KILL_ROWS)
    catchup = [stack.new_duckling(team, "celery", start_date=days[0]) for team in CATCHUP_TEAMS]
    victim_lake = stack.new_duckling(KILL_TEAM, "celery", start_date=yesterday)
    registry = SESSION_DIR / "celery" / "ducklings.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    write_registry([*catchup, victim_lake], registry)

    # The workers reach S3 through a proxy that can hold an upload mid-way (the rest of the suite: moto direct).
    proxy = FaultyProxy(stack.moto.port)
    lake_conn = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
    lake_conn["extra"]["s3_endpoint_url"] = proxy.url
    started = time.monotonic()
    celery = make_celery_stack(SESSION_DIR / "celery" / "home", dict(os.environ), new_metadata_db(stack.postgres, DB), {
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__STATE_PATH": str(registry.with_name("state.json")),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
        "AIRFLOW_CONN_DUCKLAKE_DEFAULT": json.dumps(lake_conn),
    })
    try:
        for name in WORKERS:  # they boot while the DAGs are serialized (nothing is queued before the scheduler)
            celery.start_worker(name, concurrency=2)
        _airflow(celery, "dags", "reserialize")
        _airflow(celery, "dags", "pause", "--treat-dag-id-as-regex", "-y", ".*")
        catchup_dags = [dag_id_for("events", team) for team in CATCHUP_TEAMS]
        _airflow(celery, "dags", "unpause", "--treat-dag-id-as-regex", "-y", "^(" + "|".join(catchup_dags) + ")$")
        celery.wait_for_workers()  # both consume before the first task is queued
        celery.airflow.start(api_first=True)
        yield Deployment(stack, celery, proxy, days, catchup, victim_lake, started)
    finally:
        celery.stop()
        proxy.close()


@pytest.mark.slow
def test_three_teams_catch_up_spread_over_both_workers_exactly_once(deployment: Deployment) -> None:
    d = deployment
    catchup_dags = [dag_id_for("events", duckling.team_id) for duckling in d.catchup]
    _wait_for_runs(d.stack, d.celery, {(dag_id, day) for dag_id in catchup_dags for day in d.days}, timeout=300)
    caught_up = time.monotonic() - d.started
    ran_on = dict(d.query("SELECT hostname, count(*) FROM task_instance WHERE dag_id = ANY(%s) GROUP BY hostname",
                          catchup_dags))
    export_tries = {(dag_id, start.date()): tries for dag_id, start, tries in d.query(
        "SELECT ti.dag_id, r.data_interval_start, ti.try_number FROM task_instance ti JOIN dag_run r "
        "ON r.dag_id = ti.dag_id AND r.run_id = ti.run_id WHERE ti.task_id = 'export' AND ti.dag_id = ANY(%s)",
        catchup_dags)}

    # Both workers ran tasks (each takes at most 2 at a time, and the scheduler queues up to 4).
    assert set(ran_on) == set(WORKERS) and all(ran_on.values()), ran_on
    # Every team-day is in its lake exactly once: ClickHouse's rows, no event twice, one live file, and one
    # object per export attempt (nothing overwritten).
    ch = ClickHouseHook()
    for duckling, dag_id in zip(d.catchup, catchup_dags, strict=True):
        expected, lake = clickhouse_day_counts(ch, duckling.team_id), _lake(duckling)
        assert lake.day_rows == {day: expected[day] for day in d.days}
        assert lake.rows == lake.distinct_uuids == sum(expected[day] for day in d.days)
        keys = d.stack.keys(duckling.bucket, "backfill/events/")
        for day in d.days:
            prefix = Partition(duckling.team_id, day).prefix("events")
            assert len(lake.live_on(duckling.team_id, day)) == 1
            assert len([k for k in keys if prefix in k]) == export_tries[(dag_id, day)]
    print(f"\ncelery catch-up: {len(d.catchup)} teams x {len(d.days)} days, {sum(ran_on.values())} task instances "
          f"ran on {ran_on}; done {caught_up:.0f} s after the deployment started")


@pytest.mark.slow
def test_a_worker_killed_mid_export_loses_and_duplicates_nothing(deployment: Deployment, tmp_path: Path) -> None:
    d, kill_dag = deployment, dag_id_for("events", KILL_TEAM)
    # The catch-up is over, so the kill team's export is the only upload through the proxy.
    _wait_for_runs(d.stack, d.celery, {(dag_id_for("events", duckling.team_id), day)
                                       for duckling in d.catchup for day in d.days}, timeout=300)
    # Its upload held in flight, the worker running the export is killed with everything under it.
    d.proxy.hold_after(1_000_000)
    _airflow(d.celery, "dags", "unpause", kill_dag)
    assert d.proxy.holding.wait(300), f"the export never uploaded:\n{d.celery.log_tail('scheduler')}"
    running = d.query("SELECT hostname, try_number, state FROM task_instance WHERE dag_id = %s AND task_id = 'export'",
                      kill_dag)
    assert len(running) == 1 and running[0][1:] == (1, "running"), running
    victim = running[0][0]
    survivor = ({*WORKERS} - {victim}).pop()
    killed = d.celery.workers[victim].kill_node()
    killed_at = time.monotonic()
    d.proxy.release()  # the dead attempt's statement goes on in ClickHouse and finishes its object on S3
    _wait_for_runs(d.stack, d.celery, {(kill_dag, d.yesterday)}, timeout=240)
    recovered = time.monotonic() - killed_at

    # The killed try ran on the victim and failed; the retry ran on the survivor, which also registered.
    assert len(killed) >= 3, killed  # the worker, its pool processes, the task's supervisor and runner
    tries = d.query("SELECT try_number, hostname, state FROM task_instance_history "
                    "WHERE dag_id = %s AND task_id = 'export' ORDER BY try_number", kill_dag)
    assert [(t[0], t[1]) for t in tries] == [(1, victim)] and tries[0][2] in ("failed", "up_for_retry"), tries
    final = d.query("SELECT try_number, hostname, state FROM task_instance WHERE dag_id = %s AND task_id = 'export'",
                    kill_dag)
    assert final == [(2, survivor, "success")], final
    assert d.query("SELECT hostname, try_number FROM task_instance WHERE dag_id = %s AND task_id = 'register'",
                   kill_dag) == [(survivor, 1)]
    # The day is exact: ClickHouse's rows, each once, in one live file, the retry's.
    lake = _lake(d.victim_lake)
    assert clickhouse_day_counts(ClickHouseHook(), KILL_TEAM) == lake.day_rows == {d.yesterday: KILL_ROWS}
    assert lake.rows == lake.distinct_uuids == KILL_ROWS
    live = lake.live_on(KILL_TEAM, d.yesterday)
    assert len(live) == 1 and live[0].endswith("-try2.parquet"), live
    # The dead attempt's object is in the bucket, complete (registering it too would double the day), and
    # the lake does not reference it.
    keys = d.stack.keys(d.victim_lake.bucket, "backfill/events/")
    assert [k.rsplit("-", 1)[1] for k in keys] == ["try1.parquet", "try2.parquet"], keys
    assert live[0].endswith(keys[1]) and _object_rows(d.stack, d.victim_lake.bucket, keys[0], tmp_path) == KILL_ROWS
    print(f"\ncelery kill: {victim} killed ({len(killed)} processes) mid-upload; try 2 on {survivor}; the day done "
          f"{recovered:.0f} s after the kill; objects: {[k.rsplit('/', 1)[1] for k in keys]}")


@pytest.mark.slow
def test_no_secret_in_any_log_of_the_deployment(deployment: Deployment) -> None:
    """Components, workers (their banners name the broker and result backend) and task logs."""
    logs = deployment.celery.logs()
    secrets = {CATALOG_PASSWORD, CLICKHOUSE_PASSWORD, BASE_AWS_SECRET,
               *(d.cross_account_external_id for d in [*deployment.catchup, deployment.victim_lake])}
    assert any("worker-" in path for path in logs) and any("task_id=export" in path for path in logs), sorted(logs)
    assert not [(path, secret[:6]) for path, text in logs.items() for secret in secrets if secret in text]
