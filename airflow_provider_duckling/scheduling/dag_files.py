"""The DAG files a deployment puts in its Airflow dags folder: each builds its DAGs from the installed package.

The repository's ``dags/`` holds the same files (with docstrings; tests/test_wheel_install.py checks that the code
is the same). An installed package has no checkout, so the demo writes these into its own home instead.
"""

from __future__ import annotations

from pathlib import Path

DAG_FILES: dict[str, str] = {
    "duckling_backfill.py": (
        "from airflow_provider_duckling.scheduling.dag_factory import build_dags\n\n"
        "globals().update(build_dags(dag_file=__file__))\n"
    ),
    "duckling_operations.py": (
        "from airflow_provider_duckling.scheduling.ops_dags import build_ops_dags\n\n"
        "globals().update(build_ops_dags())\n"
    ),
}


def write_dag_files(folder: Path) -> Path:
    """Write :data:`DAG_FILES` into ``folder`` (created if missing) and return it.

    :param folder: the Airflow dags folder to fill.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DAG_FILES.items():
        (folder / name).write_text(text)
    return folder
