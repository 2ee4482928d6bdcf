"""A real Airflow 3 deployment on loopback: api-server (with the Execution API), scheduler with the
LocalExecutor, and dag-processor, sharing a PostgreSQL metadata database. Tasks then run the way they do in
production: in separate worker processes, with connections through the Execution API and no ORM access."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.services import free_port


@dataclass
class AirflowStack:
    home: Path
    env: dict[str, str]
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, api_first: bool = False) -> None:
        """Start the three components; ``api_first``: the scheduler only once the api-server answers (when
        DAGs are already serialized, the first tasks would otherwise start before the Execution API)."""
        components = [["api-server", "--port", str(self.port), "--host", "127.0.0.1", "--workers", "1"],
                      ["scheduler"], ["dag-processor"]]
        for component in components[:1] if api_first else components:
            self._spawn(component)
        self._wait_for_api()
        for component in components[1:] if api_first else []:
            self._spawn(component)

    def _spawn(self, component: list[str]) -> None:
        log = (self.home / f"{component[0]}.log").open("wb")
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "airflow", *component], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        ))

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("the api-server did not answer within 120 s:\n" + self.log_tail("api-server"))

    def log_tail(self, component: str, chars: int = 3000) -> str:
        path = self.home / f"{component}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def make_airflow_stack(
    home: Path, base_env: dict[str, str], metadata_url: str, extra: dict[str, str], export_pool_slots: int = 4,
) -> AirflowStack:
    """An Airflow on ``metadata_url`` (from :func:`new_metadata_db`: migrated, with the export pool), not started."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **_base_env(base_env, home, metadata_url),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "duckling-test-jwt-secret-0123456789abcdef",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        **extra,
    }
    stack = AirflowStack(home, env, port)
    database = _DATABASES.get(metadata_url)
    if database is None:
        raise ValueError("make the metadata database with new_metadata_db(): it copies a migrated one")
    # The provider's one-time setup (`duckling setup`, run into the template): the pool that bounds
    # concurrent exports; here only its size changes.
    database.postgres.psql(f"UPDATE slot_pool SET slots = {int(export_pool_slots)} WHERE pool = '{POOL}'",
                           database=database.name)
    return stack


POOL = "duckling_exports"
TEMPLATE_DB = "airflow_migrated_template"


@dataclass(frozen=True)
class _Database:
    postgres: Any
    name: str


_DATABASES: dict[str, _Database] = {}
_TEMPLATES: set[int] = set()


def _base_env(base_env: dict[str, str], home: Path, metadata_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in base_env.items() if not k.startswith("AIRFLOW__DATABASE__")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
    }


def _url(postgres: Any, name: str) -> str:
    return f"postgresql+psycopg2://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/{name}"


def _migrated_template(postgres: Any) -> None:
    """Once per PostgreSQL server: a database migrated by ``airflow db migrate`` with the export pool set
    (``airflow pools set``), which every stack's metadata database is then copied from."""
    if postgres.port in _TEMPLATES:
        return
    postgres.create_database(TEMPLATE_DB)
    home = Path(tempfile.mkdtemp(prefix="airflow-template-"))
    env = {**_base_env(dict(os.environ), home, _url(postgres, TEMPLATE_DB)), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    for args in (["db", "migrate"], ["pools", "set", POOL, "4", "duckling exports at once"]):
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n" + result.stderr[-3000:])
    _TEMPLATES.add(postgres.port)


def new_metadata_db(postgres: Any, name: str) -> str:
    """A fresh database ``name`` on the stack's PostgreSQL for an Airflow's metadata; returns its SQLAlchemy URL.

    It is a copy (``CREATE DATABASE … TEMPLATE``, well under a second) of one database migrated once per
    server, instead of an ``airflow db migrate`` and ``airflow pools set`` per stack."""
    _migrated_template(postgres)
    postgres.psql(f'DROP DATABASE IF EXISTS "{name}"')
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    url = _url(postgres, name)
    _DATABASES[url] = _Database(postgres, name)
    return url
