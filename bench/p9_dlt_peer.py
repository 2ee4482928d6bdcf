"""P9: the peer — the same team-day moved into a DuckLake by dlt and by this project, in one run.

One ClickHouse (chdb behind ClickHouse's HTTP interface, tests/support/chdb_http_server.py) holds a
``--rows`` team-day of ``events`` with some history around it (other days of the team, other teams on
the day). Four ways move that team-day, each into a new lake of the same kind — a PostgreSQL catalog
(its own database) and data in its own moto S3 bucket — each run in a fresh worker process:

* ``ours``: what the export and the register task run, each in its own process as Airflow runs them
  (assume the duckling's role through moto STS; the export: the schema pre-flight beside the row count,
  ClickHouse writing Parquet straight into the bucket with ``INSERT INTO FUNCTION s3(...)``, the footers
  read back; the register: DuckDB + DuckLake add the file to the catalog). Time = the two tasks' work;
  worker peak = the larger task's peak (``--one-process`` runs both in one process, as bench P1 does);
* ``bare export``: the same ``INSERT INTO FUNCTION s3(...)`` statement alone (the engine's floor);
* ``dlt arrow``: dlt's fastest honest path, a resource yielding the Arrow record batches of
  clickhouse-connect's ``query_arrow_stream`` (the same SELECT as ours, so the same columns and types)
  into dlt's ``ducklake`` destination;
* ``dlt sql_table``: dlt's ``sql_table`` source (default SQLAlchemy backend) over clickhouse-connect's
  SQLAlchemy dialect, the team-day chosen with a ``query_adapter_callback``.

dlt runs in its own virtualenv (``.venv-bench-dlt/``, rebuilt when the pinned requirement list below
changes), from the package index; its DuckDB loads the DuckLake, httpfs and postgres_scanner extensions
from the installed ``duckdb-extension-*`` packages with ``LOAD '<path>'`` (autoinstall and autoload off),
through the destination's own ``statements``/``global_config`` credentials fields. The destination
attaches ``ducklake:postgres:<catalog>`` with ``DATA_PATH 's3://bucket/…'`` and an S3 secret for moto.

Measured per run: the work's wall time inside the worker (after its imports), the worker's peak RSS
(``wait4`` of that child only), and the ClickHouse server's peak RSS: the server is restarted before
every run (chdb keeps what it allocated), so its ``VmHWM`` at the end of a run is that run's peak.
Both clickhouse-connect clients run with ``compress=False`` (so does ours): the test front gzips whole
answers in Python, which a real server does not. The front also answers a query only once it has the
whole result, so the streaming peers' server peak holds their whole Arrow/Native answer; a real server
streams it (the figures say how large that answer was).

    .venv/bin/python bench/p9_dlt_peer.py [--rows 1000000] [--repeat 3] [--sql-repeat 2] [--quick]
        [--row-groups 1000000/512M,100000] [--only ours,bare,arrow,sql] [--one-process]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _stack

DAY = dt.date(2024, 1, 15)
TEAM = 1
GOALS = {"time": 0.4, "worker": 0.35, "total": 0.6}

#: The dlt virtualenv's pinned requirements; the venv is rebuilt when this list changes.
DLT_REQUIREMENTS = (
    "dlt[ducklake,sql_database]==1.31.0",
    "duckdb==1.5.5",
    "duckdb-extension-ducklake==1.5.5",
    "duckdb-extension-httpfs==1.5.5",
    "duckdb-extension-postgres-scanner==1.5.5",
    "clickhouse-connect[arrow,sqlalchemy]==1.12.0",
    "pyarrow==26.0.1",
    "sqlalchemy==2.1.9",
    "pytz==2026.6",
)
DLT_VENV = _stack.REPO_ROOT / ".venv-bench-dlt"
DLT_EXTENSIONS = {
    "ducklake": "duckdb_extension_ducklake",
    "httpfs": "duckdb_extension_httpfs",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}

PEERS = {
    "ours": "ours: export task + register task",
    "bare": "bare INSERT INTO FUNCTION s3() (floor)",
    "arrow": "dlt: Arrow batches (query_arrow_stream)",
    "sql": "dlt: sql_table (sqlalchemy backend)",
}


def _vm(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (VmHWM = peak RSS so far)."""
    return _proc_vm(os.getpid(), field)


def _proc_vm(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- the dlt virtualenv


def dlt_python() -> Path:
    """The dlt venv's interpreter, created (or re-created) when the pinned list's hash changed."""
    digest = hashlib.sha256("\n".join(DLT_REQUIREMENTS).encode()).hexdigest()[:16]
    stamp = DLT_VENV / "requirements.sha256"
    python = DLT_VENV / "bin" / "python"
    if stamp.exists() and stamp.read_text().strip() == digest and python.exists():
        return python
    print(f"building the dlt virtualenv in {DLT_VENV} (requirements hash {digest}) …", flush=True)
    start = time.perf_counter()
    shutil.rmtree(DLT_VENV, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(DLT_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *DLT_REQUIREMENTS], check=True)
    stamp.write_text(digest + "\n")
    print(f"… built in {time.perf_counter() - start:.0f} s", flush=True)
    return python


# ---------------------------------------------------------------- the workers (fresh processes)


def ours_worker(spec: dict) -> dict:
    """Ours, in the main venv, one task's process: ``export`` does what the export task's execute() does
    (assume the role; the schema pre-flight reading the catalog while the rows are counted; the INSERT; the
    footers read back), ``register`` what the register task's does (assume the role, load the extensions,
    attach, ``register_files``, close), ``both`` the two in one process (as bench P1 does)."""
    import clickhouse_connect  # noqa: F401
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook  # noqa: F401

    import airflow_provider_duckling.operators.ducklake_register  # noqa: F401  (a task process imports the DAG's operators)
    from airflow_provider_duckling.common.heap import frozen_heap
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.domain.tables import EVENTS
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.operators.base import Target
    from airflow_provider_duckling.operators.clickhouse_to_s3 import ClickHouseToDucklingS3Operator
    from airflow_provider_duckling.registry.catalog import Duckling
    from airflow_provider_duckling.transfer.export import ExportResult, export_partition
    from airflow_provider_duckling.transfer.lake import check_schema, register_files

    after_imports = _vm("VmHWM")
    duckling = Duckling(**{**spec["duckling"], "start_date": None})
    partition = Partition(duckling.team_id, dt.date.fromisoformat(spec["day"]))
    hook = DuckLakeHook()
    out: dict = {"hwm_imports_kib": after_imports, "steps": {}}
    start = time.perf_counter()
    with frozen_heap():  # as the operators' execute() runs
        if spec["stage"] in ("export", "both"):
            storage = hook.storage(duckling, will_attach=False)
            target = Target(partition, EVENTS, duckling, hook, storage, hook.settings(duckling))

            def preflight() -> None:
                problems = check_schema(EVENTS.lake_columns, ClickHouseToDucklingS3Operator._lake_columns(target, False))
                if problems.incompatible:
                    raise RuntimeError(f"schema pre-flight: {problems.incompatible}")

            clickhouse = _stack.Timed(ClickHouseHook())  # statement times, for the breakdown
            exported = export_partition(clickhouse, storage, EVENTS, partition, spec["token"],
                                        spec.get("settings") or None, preflight=preflight)
            out["statements"] = dict(clickhouse.times)
            out["export"] = exported.to_xcom()
            out.update(rows=exported.rows, bytes=exported.bytes, files=len(exported.files))
            out["steps"]["export"] = time.perf_counter() - start
        if spec["stage"] in ("register", "both"):
            began = time.perf_counter()
            exported = ExportResult(**(spec.get("export") or out["export"]))
            storage = hook.storage(duckling)
            with hook.attach(duckling, storage) as con:
                out["hwm_attach_kib"] = _vm("VmHWM")  # role, extensions loaded, lake attached
                result = register_files(con, EVENTS, partition, exported.files, exported.rows, storage.data_path)
            out["rows"] = result.rows
            out["steps"]["register"] = time.perf_counter() - began
    out["work_s"] = time.perf_counter() - start
    return out


def run_ours(spec: dict, one_process: bool) -> dict:
    """Ours as Airflow runs it, the export task and then the register task, each in a new process (time:
    the two tasks' work added; worker peak: the larger task's); or both in one process."""
    def child(stage: str, **extra) -> dict:
        return run_child([sys.executable, __file__, "--worker", json.dumps({**spec, "stage": stage, **extra})],
                         dict(os.environ))

    if one_process:
        return child("both")
    export = child("export")
    register = child("register", export=export["export"])
    return {
        "rows": register["rows"], "bytes": export["bytes"], "files": export["files"],
        "work_s": export["work_s"] + register["work_s"],
        "steps": {**export["steps"], **register["steps"]},
        "hwm_imports_kib": max(export["hwm_imports_kib"], register["hwm_imports_kib"]),
        "maxrss_kib": max(export["maxrss_kib"], register["maxrss_kib"]),
        "task_peaks_kib": [export["maxrss_kib"], register["maxrss_kib"]],
        "register_hwm_kib": [register["hwm_imports_kib"], register["hwm_attach_kib"]],
        "statements": export.get("statements", {}),
        "process_s": export["process_s"] + register["process_s"],
    }


def dlt_worker(spec: dict) -> dict:
    """dlt, in its own venv: one pipeline run of the team-day into a fresh DuckLake (PostgreSQL catalog,
    S3 storage on moto), by the Arrow resource or by ``sql_table``."""
    import importlib

    import clickhouse_connect
    import dlt
    import pyarrow  # noqa: F401
    from dlt.common.configuration.specs import AwsCredentials
    from dlt.common.storages.configuration import FilesystemConfiguration
    from dlt.destinations.impl.ducklake.configuration import DuckLakeCredentials

    if spec["mode"] == "sql":
        import sqlalchemy as sa
        from dlt.sources.sql_database import sql_table
    after_imports = _vm("VmHWM")
    ch = spec["clickhouse"]
    start = time.perf_counter()

    storage = FilesystemConfiguration(bucket_url=spec["bucket_url"], credentials=AwsCredentials(
        aws_access_key_id=spec["aws_key"], aws_secret_access_key=spec["aws_secret"],
        region_name="us-east-1", endpoint_url=spec["s3_endpoint"]))
    credentials = DuckLakeCredentials(ducklake_name="lake", catalog=spec["catalog_url"], storage=storage)
    # Offline: the extensions from the installed packages, never INSTALL or autoload.
    credentials.global_config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    paths = []
    for name, package in DLT_EXTENSIONS.items():
        folder = Path(importlib.import_module(package).__file__).parent
        paths.append(next(folder.glob(f"extensions/*/{name}.duckdb_extension")))
    credentials.statements = [f"LOAD '{path}'" for path in paths]
    pipeline = dlt.pipeline(pipeline_name=f"p9_{spec['mode']}", destination=dlt.destinations.ducklake(
        credentials=credentials), dataset_name="posthog", pipelines_dir=spec["pipelines_dir"])

    received = {"bytes": 0, "batches": 0}
    if spec["mode"] == "arrow":
        client = clickhouse_connect.get_client(host=ch["host"], port=ch["port"], username="default",
                                               password=ch["password"], database="posthog", compress=False)

        @dlt.resource(name="events", write_disposition="append")
        def events():
            with client.query_arrow_stream(spec["select"], parameters=spec["params"]) as stream:
                for batch in stream:
                    received["bytes"] += batch.nbytes
                    received["batches"] += 1
                    yield batch

        info = pipeline.run(events())
    else:
        day = dt.datetime.fromisoformat(spec["day"]).replace(tzinfo=dt.UTC)

        def one_team_day(query, table):
            return query.where(table.c.team_id == spec["team_id"]).where(
                table.c.timestamp >= day).where(table.c.timestamp < day + dt.timedelta(days=1))

        url = (f"clickhousedb://default:{ch['password']}@{ch['host']}:{ch['port']}/posthog"
               "?compress=false")
        source = sql_table(credentials=sa.create_engine(url), table="events", schema="posthog",
                           query_adapter_callback=one_team_day)
        info = pipeline.run(source, write_disposition="append")
    done = time.perf_counter()
    info.raise_on_failed_jobs()
    steps = {step.step: (step.finished_at - step.started_at).total_seconds()
             for step in pipeline.last_trace.steps if step.finished_at and step.started_at}
    hwm = _vm("VmHWM")
    with pipeline.sql_client() as client_sql:
        rows = client_sql.execute_sql("SELECT count(*) FROM events")[0][0]
        columns = [r[0] for r in client_sql.execute_sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'events' "
            "AND table_schema = 'posthog' ORDER BY ordinal_position")]
    return {"rows": rows, "hwm_imports_kib": after_imports, "hwm_run_kib": hwm, "work_s": done - start,
            "steps": steps, "received": received, "columns": columns}


def run_child(cmd: list[str], env: dict[str, str]) -> dict:
    """Run one worker; its result (last stdout line) plus its own peak RSS (KiB) from ``wait4`` and wall."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        out = process.stdout.read()
        process.stdout.close()
        _, status, usage = os.wait4(process.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            stderr.seek(0)
            raise RuntimeError(f"worker failed ({code}):\n{stderr.read().decode(errors='replace')[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["maxrss_kib"] = usage.ru_maxrss
    result["process_s"] = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- the ClickHouse server, restartable


class Server:
    """The chdb HTTP server on a fixed port, restarted before each run so its peak RSS is that run's."""

    def __init__(self, data_path: Path, password: str) -> None:
        self.data_path, self.password, self.port, self.server = data_path, password, 0, None

    def restart(self) -> None:
        from tests.support.chdb_http_server import start_chdb_http_server

        if self.server is not None:
            self.server.stop()
        self.server = start_chdb_http_server(self.data_path, password=self.password, port=self.port)
        self.port = self.server.port

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the team-day")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours, bare and dlt arrow (median)")
    parser.add_argument("--sql-repeat", type=int, default=2, help="runs of dlt sql_table (the slow one)")
    parser.add_argument("--only", default="ours,bare,arrow,sql", help="which peers to run")
    parser.add_argument("--row-groups", default="",
                        help="also run ours and the bare export with these Parquet row-group limits, comma-separated, "
                             "each ROWS or ROWS/BYTES (e.g. 100000 or 10000000/64M): output_format_parquet_row_group_size"
                             "[_bytes]")
    parser.add_argument("--one-process", action="store_true",
                        help="run our export and register in one worker process (as bench P1) instead of two tasks")
    parser.add_argument("--quick", action="store_true", help="100k rows, one run each")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dlt-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(ours_worker(json.loads(args.worker))), flush=True)
        return
    if args.dlt_worker:
        print(json.dumps(dlt_worker(json.loads(args.dlt_worker))), flush=True)
        return
    if args.quick:
        args.rows, args.repeat, args.sql_repeat = 100_000, 1, 1
    peers = [p for p in args.only.split(",") if p]
    began = time.perf_counter()
    python = dlt_python() if {"arrow", "sql"} & set(peers) else None

    root = _stack.workdir("p9")
    server = None
    try:
        os.environ.update(_stack.airflow_home(root))
        with _stack.engines(root, clickhouse=False) as bench:
            from tests.support.stack import (
                BASE_AWS_KEY_ID,
                BASE_AWS_SECRET,
                CATALOG_PASSWORD,
                CATALOG_USER,
                CLICKHOUSE_PASSWORD,
            )

            server = Server(root / "chdb", CLICKHOUSE_PASSWORD)
            server.restart()
            bench.stack.clickhouse_port, bench.stack.clickhouse_pid = server.port, server.pid
            os.environ.update(bench.stack.connection_env())
            seed(args.rows)
            ctx = dict(bench=bench, server=server, python=python, rows=args.rows, root=root,
                       aws=(BASE_AWS_KEY_ID, BASE_AWS_SECRET), catalog=(CATALOG_USER, CATALOG_PASSWORD),
                       password=CLICKHOUSE_PASSWORD, one_process=args.one_process)
            variants = [(p, None) for p in peers]
            for size in [s.strip() for s in args.row_groups.split(",") if s.strip()]:
                variants += [(p, size) for p in ("ours", "bare") if p in peers]
            results: dict[tuple[str, str | None], list[dict]] = {v: [] for v in variants}
            for rep in range(max(args.repeat, args.sql_repeat)):
                order = variants[rep % len(variants):] + variants[:rep % len(variants)]
                for peer, size in order:
                    if rep >= (args.sql_repeat if peer == "sql" else args.repeat):
                        continue
                    result = run_once(ctx, peer, size, f"{rep}")
                    results[(peer, size)].append(result)
                    print(f"run {rep + 1} {label(peer, size)}: {result['work_s']:.2f} s, worker peak "
                          f"{mib(result.get('maxrss_kib'))}, server peak {mib(result['server_hwm_kib'])} "
                          f"(idle {mib(result['server_idle_kib'])}), steps "
                          f"{ {k: round(v, 2) for k, v in result.get('steps', {}).items()} }", flush=True)
    finally:
        if server is not None:
            server.stop()
        _stack.remove(root)
    report(results, args, time.perf_counter() - began)


def seed(rows: int) -> None:
    """The team-day, plus history: the team's days around it and other teams on the same day."""
    from airflow_provider_duckling.demo.sample_data import create_schema, insert_events
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

    clickhouse = ClickHouseHook()
    create_schema(clickhouse)
    start = time.perf_counter()
    insert_events(clickhouse, TEAM, DAY, rows)
    history = 0
    for offset in (-3, -2, -1, 1):
        insert_events(clickhouse, TEAM, DAY + dt.timedelta(days=offset), rows // 4)
        history += rows // 4
    for team in (2, 3):
        insert_events(clickhouse, team, DAY, rows // 2)
        history += rows // 2
    clickhouse.execute("OPTIMIZE TABLE posthog.events FINAL")
    print(f"seeded {rows:,} rows for team {TEAM} on {DAY} and {history:,} around them in "
          f"{time.perf_counter() - start:.1f} s", flush=True)


def label(peer: str, size: str | None) -> str:
    if size is None:
        return PEERS[peer]
    if "=" in size:
        return f"{PEERS[peer].split(' (')[0]}, {size}"
    return f"{PEERS[peer].split(' (')[0]}, row groups ≤ {size.replace('/', ' rows / ')}" + (
        "" if "/" in size else " rows")


def row_group_settings(size: str | None) -> dict:
    """``ROWS`` or ``ROWS/BYTES`` (a K/M/G suffix allowed) as the export's row-group settings; or any
    ClickHouse settings written ``name=value&name=value`` (for investigation)."""
    if size is None:
        return {}
    if "=" in size:
        return {k: int(v) if v.isdigit() else v for k, v in (kv.split("=", 1) for kv in size.split("&"))}
    rows, _, size_bytes = size.partition("/")
    settings = {"output_format_parquet_row_group_size": int(rows)}
    if size_bytes:
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size_bytes[-1].upper(), 1)
        settings["output_format_parquet_row_group_size_bytes"] = int(size_bytes.rstrip("KMGkmg")) * unit
    return settings


def run_once(ctx: dict, peer: str, size: str | None, tag: str) -> dict:
    """One run of ``peer`` on a freshly restarted server, into a fresh lake."""
    bench, server = ctx["bench"], ctx["server"]
    server.restart()
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

    ClickHouseHook().query_rows("SELECT 1")
    idle = _proc_vm(server.pid, "VmRSS")
    variant = hashlib.sha256((size or "").encode()).hexdigest()[:6]
    duckling = bench.new_duckling(TEAM, f"p9-{peer}-{variant}-{tag}")
    if peer == "ours":
        spec = {"duckling": duckling.to_dict(), "day": DAY.isoformat(), "token": f"p9-{tag}",
                "settings": row_group_settings(size)}
        result = run_ours(spec, ctx["one_process"])
    elif peer == "bare":
        result = bare_export(duckling, size, tag)
    else:
        result = run_child([str(ctx["python"]), __file__, "--dlt-worker", json.dumps(dlt_spec(ctx, peer, duckling))],
                           dlt_env(ctx["root"]))
    result["server_hwm_kib"] = _proc_vm(server.pid, "VmHWM")
    result["server_idle_kib"] = idle
    if result["rows"] != ctx["rows"]:
        raise RuntimeError(f"{peer}: {result['rows']} rows in the lake, expected {ctx['rows']}")
    return result


def bare_export(duckling, size: str | None, tag: str) -> dict:
    """The export statement alone (from this process: only its time and the server's memory count)."""
    from airflow_provider_duckling.domain.tables import EVENTS, export_select
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.transfer.export import merged_settings, settings_clause

    clickhouse = ClickHouseHook()
    storage = DuckLakeHook().storage(duckling, will_attach=False)
    key = f"bare/{tag}.parquet"
    destination, params = storage.clickhouse_table_function(key)
    storage.prepare(key)
    params.update(team_id=TEAM, day=DAY.isoformat())
    select = f"{export_select(EVENTS, clickhouse.database)}\n{settings_clause(merged_settings(row_group_settings(size)))}"
    clickhouse.query_rows("SELECT 1")
    start = time.perf_counter()
    clickhouse.execute(f"INSERT INTO FUNCTION {destination}\n{select}", params)
    elapsed = time.perf_counter() - start
    metadata = destination.replace("'Parquet'", "'ParquetMetadata'")
    rows, groups = clickhouse.query_rows(f"SELECT num_rows, num_row_groups FROM {metadata}", params)[0]
    size_bytes = clickhouse.query_rows(f"SELECT any(_size) FROM {destination}", params)[0][0]
    return {"rows": int(rows), "work_s": elapsed, "bytes": int(size_bytes), "row_groups": int(groups)}


def dlt_spec(ctx: dict, peer: str, duckling) -> dict:
    from airflow_provider_duckling.domain.tables import EVENTS, export_select
    from airflow_provider_duckling.transfer.export import merged_settings, settings_clause

    stack = ctx["bench"].stack
    user, password = ctx["catalog"]
    # The same SELECT as ours (types cast to the lake's), without the export's Parquet/S3 settings.
    select = f"{export_select(EVENTS, 'posthog')}\n{settings_clause({'max_execution_time': 3600})}"
    assert merged_settings(None)["max_execution_time"] == 3600
    return {
        "mode": peer, "day": DAY.isoformat(), "team_id": TEAM, "select": select,
        "params": {"team_id": TEAM, "day": DAY.isoformat()},
        "clickhouse": {"host": "127.0.0.1", "port": stack.clickhouse_port, "password": ctx["password"]},
        "catalog_url": f"postgres://{user}:{password}@127.0.0.1:{stack.postgres.port}/{duckling.db_name}",
        "bucket_url": f"s3://{duckling.bucket}/lake", "s3_endpoint": stack.moto.url,
        "aws_key": ctx["aws"][0], "aws_secret": ctx["aws"][1],
        "pipelines_dir": str(ctx["root"] / "dlt" / f"{peer}-{duckling.bucket}"),
    }


def dlt_env(root: Path) -> dict[str, str]:
    """The dlt worker's environment: no telemetry, its home (``~/.dlt``) in the run's temp dir."""
    home = root / "dlt-home"
    home.mkdir(exist_ok=True)
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(home), RUNTIME__DLTHUB_TELEMETRY="false", RUNTIME__LOG_LEVEL="WARNING",
               PYTHONPATH=str(_stack.REPO_ROOT / "bench"))
    return env


# ---------------------------------------------------------------- the report


def mib(kib: float | None) -> str:
    return "" if kib is None else f"{kib / 1024:,.0f} MiB"


def report(results: dict, args, elapsed: float) -> None:
    med = _stack.median

    def m(key_peer, field):
        values = [r[field] for r in results.get(key_peer, []) if r.get(field) is not None]
        return med(values) if values else None

    rows = []
    for (peer, size), runs in results.items():
        if not runs:
            continue
        t = m((peer, size), "work_s")
        worker = m((peer, size), "maxrss_kib")
        server = m((peer, size), "server_hwm_kib")
        rows.append([label(peer, size), len(runs), f"{t:.2f} s", f"{args.rows / t:,.0f}",
                     mib(m((peer, size), "hwm_imports_kib")), mib(worker), mib(server),
                     mib(m((peer, size), "server_idle_kib")), mib(worker + server) if worker else "",
                     f"{m((peer, size), 'process_s'):.2f} s" if worker else "",
                     f"{m((peer, size), 'bytes') / 1e6:.1f} MB" if m((peer, size), "bytes") else "",
                     f"{m((peer, size), 'row_groups'):.0f}" if m((peer, size), "row_groups") else ""])
    print(f"\nP9 the peer: a {args.rows:,}-row team-day into a DuckLake (PostgreSQL catalog, moto S3), "
          f"ClickHouse = chdb over HTTP; medians; run took {elapsed:.0f} s")
    print(_stack.table(["peer", "runs", "time", "rows/s", "worker after imports", "worker peak",
                        "server peak", "server idle", "worker+server", "process wall", "Parquet", "row groups"], rows))

    ours, arrow, sql, bare = ("ours", None), ("arrow", None), ("sql", None), ("bare", None)
    ratios = []
    for name, other in (("dlt arrow", arrow), ("dlt sql_table", sql)):
        if not results.get(other) or not results.get(ours):
            continue
        t = m(ours, "work_s") / m(other, "work_s")
        w = m(ours, "maxrss_kib") / m(other, "maxrss_kib")
        total = (m(ours, "maxrss_kib") + m(ours, "server_hwm_kib")) / (
            m(other, "maxrss_kib") + m(other, "server_hwm_kib"))
        srv = m(ours, "server_hwm_kib") / m(other, "server_hwm_kib")
        goal = other == arrow
        ratios += [
            [f"ours ÷ {name}: time", f"{t:.3f}", f"≤ {GOALS['time']}" if goal else "",
             _stack.verdict(t, GOALS["time"]) if goal else ""],
            [f"ours ÷ {name}: worker peak RSS", f"{w:.3f}", f"≤ {GOALS['worker']}" if goal else "",
             _stack.verdict(w, GOALS["worker"]) if goal else ""],
            [f"ours ÷ {name}: worker + server peak", f"{total:.3f}", f"≤ {GOALS['total']}" if goal else "",
             _stack.verdict(total, GOALS["total"]) if goal else ""],
            [f"ours ÷ {name}: server peak alone", f"{srv:.3f}", "", ""],
        ]
    if results.get(bare) and results.get(ours):
        ratios.append(["ours ÷ bare export: time", f"{m(ours, 'work_s') / m(bare, 'work_s'):.3f}", "", ""])
    print()
    print(_stack.table(["ratio", "value", "goal", "result"], ratios))

    print("\nWhere each worker's time goes (median seconds per step):")
    for (peer, size), runs in results.items():
        steps = sorted({k for r in runs for k in r.get("steps", {})})
        if steps:
            parts = ", ".join(f"{k} {med([r['steps'][k] for r in runs if k in r['steps']]):.2f}" for k in steps)
            per_row = ""
            if peer in ("arrow", "sql"):
                per_row = "; per row (amortised): " + ", ".join(
                    f"{k} {med([r['steps'][k] for r in runs if k in r['steps']]) / args.rows * 1e6:.2f} µs"
                    for k in ("extract", "normalize", "load") if k in steps)
            peaks = ""
            if runs[0].get("task_peaks_kib"):
                peaks = "; task peaks: export {}, register {} (after its imports {}, after attach {})".format(*(
                    mib(med([r["task_peaks_kib"][i] for r in runs])) for i in (0, 1)), *(
                    mib(med([r["register_hwm_kib"][i] for r in runs])) for i in (0, 1)))
            print(f"  {label(peer, size)}: {parts}{per_row}{peaks}")
    runs = results.get(("ours", None))
    if runs and runs[0].get("statements"):
        print("  ours, the export task's ClickHouse statements (median):")
        for sql in sorted(runs[0]["statements"], key=lambda k: -runs[0]["statements"][k]):
            print(f"    {med([r['statements'].get(sql, 0) for r in runs]):.2f} s  {sql}")
    for peer in ("arrow", "sql"):
        runs = results.get((peer, None))
        if runs:
            r = runs[0]
            received = r.get("received") or {}
            extra = [c for c in r["columns"] if c.startswith("_dlt")]
            print(f"  {PEERS[peer]}: lake columns added by dlt: {extra or 'none'}"
                  + (f"; received {received['batches']} Arrow batches, {received['bytes'] / 2**20:,.0f} MiB in Arrow"
                     if received.get("batches") else ""))
    print("Note: the test front (chdb_http_server) builds each answer whole before sending it, so the dlt peers'\n"
          "server peak holds their whole answer (the Arrow batches above); a real ClickHouse server streams it.")


if __name__ == "__main__":
    main()
