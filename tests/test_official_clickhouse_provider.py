"""Beside the official ClickHouse provider (``apache-airflow-providers-clickhousedb``), as a user's Airflow has
it: one ``clickhouse`` connection type (theirs), the user's own ``SQLExecuteQueryOperator`` and our exports on
the same ``clickhouse_default``, no duplicate registration logged, and the connections of earlier releases
still working or failing in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from tests.support.runs import run
from tests.support.stack import CLICKHOUSE_PASSWORD, DAYS

TEAM = 3  # one of the stack's seeded teams
REPO = Path(__file__).resolve().parents[1]
OFFICIAL_HOOK = "airflow.providers.clickhousedb.hooks.clickhouse.ClickHouseHook"


def _python(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``code`` in a new interpreter with a fresh AIRFLOW_HOME: what Airflow logs while it starts is seen whole."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    clean.update({"AIRFLOW_HOME": str(tmp_path / "airflow-home"), **(env or {})})
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True,
                          timeout=300)


def test_only_the_official_provider_registers_the_clickhouse_connection_type(tmp_path):
    probe = _python(
        "import json\n"
        "from airflow.providers_manager import ProvidersManager\n"
        "pm = ProvidersManager()\n"
        "pm.initialize_providers_hooks(); pm.connection_form_widgets; pm.field_behaviours\n"
        "ours = pm.providers['airflow-provider-duckling'].data['connection-types']\n"
        "hook = pm.hooks['clickhouse']\n"
        "print(json.dumps({'hook': hook.hook_class_name, 'package': hook.package_name,\n"
        "                  'ours': [c['connection-type'] for c in ours]}))\n",
        tmp_path,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found == {"hook": OFFICIAL_HOOK, "package": "apache-airflow-providers-clickhousedb", "ours": ["ducklake"]}
    logged = probe.stdout + probe.stderr
    for duplicate in ("already registered", "already added", "already exists"):
        assert duplicate not in logged, logged[-3000:]


def test_our_export_hook_is_the_official_hook_with_the_exports_options():
    from airflow.providers.clickhousedb.hooks.clickhouse import ClickHouseHook as Official

    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

    assert issubclass(ClickHouseHook, Official)
    assert (ClickHouseHook.conn_type, ClickHouseHook.default_conn_name) == ("clickhouse", "clickhouse_default")


@pytest.fixture
def duckling(stack):
    return stack.new_duckling(TEAM, "official")


USERS_DAG = f"""
import datetime as dt

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG

with DAG("users_clickhouse_dag", schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)):
    SQLExecuteQueryOperator(
        task_id="count", conn_id="clickhouse_default",
        sql="SELECT count() FROM posthog.events WHERE team_id = %(team)s AND toDate(timestamp) = %(day)s",
        parameters={{"team": {TEAM}, "day": "{DAYS[0].isoformat()}"}},
    )
"""


def _user_dag(folder: Path):
    """A user's own DAG file: the official operator counting a team's day of events on ``clickhouse_default``."""
    from airflow_provider_duckling.scheduling.airflow_env import load_dags

    folder.mkdir()
    (folder / "users_clickhouse_dag.py").write_text(USERS_DAG)
    bag = load_dags(folder)
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("users_clickhouse_dag")


def _xcom(dag_run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
            XComModel.task_id == task_id, XComModel.key == "return_value"))
    from airflow.serialization.serde import deserialize

    return deserialize(json.loads(value) if isinstance(value, str) else value)


def test_the_users_sql_operator_and_our_export_share_clickhouse_default(stack, duckling, tmp_path):
    users_run = _user_dag(tmp_path / "users_dags").test()
    assert users_run.state == "success"
    result = _xcom(users_run, "count")
    assert len(result) == 1, result
    ((counted,),) = result
    assert counted == stack.counts[(TEAM, DAYS[0])] > 0

    ours = run(TEAM, DAYS[0])
    assert ours.state == "success"
    assert lake_day_counts(duckling, "events") == {DAYS[0]: counted}


def test_session_settings_of_the_official_form_reach_the_exports_statements(stack, monkeypatch):
    from airflow.models.connection import Connection

    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

    conn = Connection(conn_id="clickhouse_tuned", conn_type="clickhouse", host="127.0.0.1",
                      port=stack.clickhouse_port, login="default", password=CLICKHOUSE_PASSWORD,
                      schema="posthog", extra=json.dumps({"session_settings": {"max_threads": 3}}))
    monkeypatch.setenv("AIRFLOW_CONN_CLICKHOUSE_TUNED", conn.as_json())
    assert ClickHouseHook("clickhouse_tuned").query_rows("SELECT getSetting('max_threads')") == [(3,)]
    assert ClickHouseHook().query_rows("SELECT getSetting('max_threads')") != [(3,)]


def test_a_connection_of_earlier_releases_still_works(stack, monkeypatch):
    """0.1's form stored ``secure``/timeouts as text and older tools prefixed them: both are read as meant."""
    from airflow.models.connection import Connection

    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook

    old = Connection(conn_id="clickhouse_old", conn_type="clickhouse", host="127.0.0.1", port=stack.clickhouse_port,
                     login="default", password=CLICKHOUSE_PASSWORD, schema="posthog",
                     extra=json.dumps({"secure": "false", "extra__clickhouse__send_receive_timeout": "77"}))
    monkeypatch.setenv("AIRFLOW_CONN_CLICKHOUSE_OLD", old.as_json())
    hook = ClickHouseHook("clickhouse_old")
    assert hook.query_rows("SELECT 1") == [(1,)]
    assert (hook._client_options["secure"], hook._client_options["send_receive_timeout"]) == (False, 77.0)


def test_an_embedded_connection_without_chdb_installed_fails_in_one_line(tmp_path):
    """A production install has no chdb; the import is made to fail here (this venv has chdb, for the tests)."""
    conn = json.dumps({"conn_type": "clickhouse", "schema": "posthog", "extra": {"chdb_path": str(tmp_path / "ch")}})
    probe = _python(
        "import sys; sys.modules['chdb'] = None\n"
        "from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook\n"
        "from airflow_provider_duckling.common.errors import ConfigurationError\n"
        "try:\n"
        "    ClickHouseHook().query_rows('SELECT 1')\n"
        "except ConfigurationError as exc:\n"
        "    print('REFUSED', exc)\n",
        tmp_path, env={"AIRFLOW_CONN_CLICKHOUSE_DEFAULT": conn},
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    (line,) = [line for line in probe.stdout.splitlines() if line.startswith("REFUSED")]
    assert "chdb is not installed" in line and "pip install 'airflow-provider-duckling[embedded]'" in line
    assert not (tmp_path / "ch").exists()
