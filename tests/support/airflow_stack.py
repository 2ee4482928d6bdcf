"""A real Airflow 3 deployment on loopback: api-server (with the Execution API), scheduler with the
LocalExecutor, and dag-processor, sharing a PostgreSQL metadata database. Tasks then run the way they do in
production: in separate worker processes, with connections through the Execution API and no ORM access."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in base_env.items() if not k.startswith("AIRFLOW__DATABASE__")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
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
    result = stack.airflow("db", "migrate")
    if result.returncode != 0:
        raise RuntimeError("airflow db migrate failed:\n" + result.stderr[-3000:])
    # The provider's one-time setup: the pool that bounds concurrent exports.
    result = stack.airflow("pools", "set", "duckling_exports", str(export_pool_slots), "duckling exports at once")
    if result.returncode != 0:
        raise RuntimeError("airflow pools set failed:\n" + result.stderr[-3000:])
    return stack


def new_metadata_db(postgres, name: str) -> str:
    """A fresh database ``name`` on the stack's PostgreSQL for an Airflow's metadata; returns its SQLAlchemy URL."""
    postgres.create_database(name)
    return f"postgresql+psycopg2://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/{name}"
