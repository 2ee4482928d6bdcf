"""Prepare a throwaway Airflow home (SQLite metadata DB) for the demo and the tests.

Must run before ``airflow`` is imported: Airflow reads AIRFLOW_HOME and its config at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"


def airflow_environment(home: Path, registry: Path, dags_folder: Path = DAGS_FOLDER) -> dict[str, str]:
    """Environment variables for an isolated Airflow using the generated duckling DAGs."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": ".*",
    }


def connection_env(conn_id: str, conn_type: str, **fields: Any) -> tuple[str, str]:
    """An ``AIRFLOW_CONN_<ID>`` variable holding a JSON connection."""
    return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, **fields})


def migrate_db(env: dict[str, str]) -> None:
    """Create the Airflow metadata DB (``airflow db migrate``) in a child process."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def load_dags(dags_folder: Path | None = None) -> Any:
    """Parse the DAGs folder and store the DAGs in the metadata DB, as the dag-processor would.

    ``dag.test()`` only runs DAGs that are serialized in the DB; this is the in-process equivalent of one
    dag-processor pass over the ``dags-folder`` bundle.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(dags_folder or os.environ["AIRFLOW__CORE__DAGS_FOLDER"]))
    sync_bag_to_db(bag, "dags-folder", None)
    return bag


def run_day(dag: Any, day: Any, run_conf: dict[str, Any] | None = None) -> Any:
    """``dag.test()`` the run whose data interval is the UTC day ``day``.

    A data-interval timetable infers a manual run's interval as the last one that ended before its
    logical date, so the run for day D is triggered just after D + 1 00:00 UTC — not at midnight, which is
    the logical date of D + 1's scheduled and backfill runs.
    """
    import datetime as dt

    from airflow.sdk._shared.secrets_masker import reset_secrets_masker

    logical = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0, 1), tzinfo=dt.UTC)
    # A worker starts each task with an empty secrets masker (Airflow's supervise() resets it); dag.test()
    # runs tasks in this process, where every run's secrets would otherwise pile up and each new one
    # recompiles the masker's pattern of all of them (quadratic: 0.5 s a run after a few hundred runs).
    reset_secrets_masker()
    run = dag.test(logical_date=logical, run_conf=run_conf)
    if run.data_interval_start.date() != day:
        raise RuntimeError(f"{dag.dag_id}: run covers {run.data_interval_start}, expected {day}")
    return run
