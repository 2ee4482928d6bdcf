"""A DAG changes version only when its definition changes (issue 12, point 7).

Airflow hashes each parse's serialized DAG and writes a new DAG version when the hash changes (and the
old version has task instances). Two parses of the project's DAG file in separate processes, from the same
registry and state file, must therefore serialize every DAG identically — while the tasks keep the
priority strategy that ranks top-ups ahead of history.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_provider_duckling.registry.catalog import Duckling, write_registry
from airflow_provider_duckling.registry.state import remember_start_dates
from airflow_provider_duckling.scheduling.airflow_env import DAGS_FOLDER
from airflow_provider_duckling.scheduling.dag_factory import TOPUP_DAG_ID, dag_id_for
from airflow_provider_duckling.scheduling.priority import HISTORY_WEIGHT, TOPUP_WEIGHT

SCRIPT = Path(__file__).parent / "support" / "serialize_dags.py"
STRATEGY = "airflow_provider_duckling.scheduling.priority.RecentDaysFirst"


def _duckling(team_id: int, start: dt.date | None) -> Duckling:
    return Duckling(team_id, f"versions-t{team_id}", "us-east-1", "127.0.0.1", f"lake_versions_t{team_id}",
                    "arn:aws:iam::123456789012:role/versions", "ext-id-versions", start_date=start)


def _parse_in_new_process(env: dict[str, str], out: Path) -> dict[str, Any]:
    """One dag-processor-like parse of the real DAG folder in a fresh interpreter."""
    result = subprocess.run([sys.executable, str(SCRIPT), str(DAGS_FOLDER), str(out)], env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_parses_serialize_every_dag_identically(tmp_path: Path) -> None:
    registry, state = tmp_path / "ducklings.yaml", tmp_path / "duckling_state.json"
    # Three ways a team DAG gets its start: the registry, discovery (the state file), not yet (no schedule).
    write_registry([_duckling(31, dt.date(2025, 1, 1)), _duckling(32, None), _duckling(33, None)], registry)
    remember_start_dates({"events": {32: dt.date(2024, 6, 1)}, "persons": {32: dt.date(2026, 1, 1)}}, state)
    env = {**os.environ, "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry), "AIRFLOW__DUCKLING__STATE_PATH": str(state),
           "AIRFLOW__DUCKLING__LAST_GOOD_PATH": str(tmp_path / "last_good.json")}

    first, second = _parse_in_new_process(env, tmp_path / "1.json"), _parse_in_new_process(env, tmp_path / "2.json")

    team_dags = {dag_id_for(table, team) for team in (31, 32, 33) for table in ("events", "persons")}
    assert team_dags | {TOPUP_DAG_ID} <= set(first)
    assert set(first) == set(second)
    for dag_id in first:
        assert first[dag_id]["data"] == second[dag_id]["data"], dag_id
        assert first[dag_id]["hash"] == second[dag_id]["hash"], dag_id
    text = json.dumps(first)
    assert " object at 0x" not in text  # no memory address anywhere (it was default_args' weight_rule)
    for dag_id in team_dags:
        dag = first[dag_id]["data"]["dag"]
        assert "weight_rule" not in dag["default_args"]["__var"], dag_id
        assert {t["__var"]["task_id"]: t["__var"].get("weight_rule") for t in dag["tasks"]} == {
            "wait_for_late_events": STRATEGY, "export": STRATEGY, "register": STRATEGY}, dag_id


def test_deserialized_tasks_still_rank_top_ups_above_history(tmp_path: Path) -> None:
    """What the scheduler builds from the stored DAG computes the weight each new task instance gets."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_provider_duckling.scheduling.priority import RecentDaysFirst

    registry = tmp_path / "ducklings.yaml"
    write_registry([_duckling(34, dt.date(2020, 1, 1))], registry)
    env = {**os.environ, "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
           "AIRFLOW__DUCKLING__STATE_PATH": str(tmp_path / "state.json"),
           "AIRFLOW__DUCKLING__LAST_GOOD_PATH": str(tmp_path / "last_good.json")}
    data = _parse_in_new_process(env, tmp_path / "dags.json")[dag_id_for("events", 34)]["data"]
    dag = DagSerialization.from_dict(data)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    runs = {
        f"scheduled__{yesterday + dt.timedelta(days=1)}T00:00:00+00:00": TOPUP_WEIGHT,
        f"topup__34_{yesterday}": TOPUP_WEIGHT,
        "scheduled__2020-01-02T00:00:00+00:00": HISTORY_WEIGHT,
    }
    for task_id in ("wait_for_late_events", "export", "register"):
        task = dag.get_task(task_id)
        assert isinstance(task.weight_rule, RecentDaysFirst)
        for run_id, weight in runs.items():
            assert TaskInstance(task, dag_version_id=None, run_id=run_id).priority_weight == weight, (task_id, run_id)
