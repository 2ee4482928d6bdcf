"""Airflow-native integration on the real stack: connection forms as the UI receives them, the "Test"
buttons' code path, asset events with partition keys, OpenLineage facets, the extra link, and one
structured log line per step."""

from __future__ import annotations

import json
import logging
import os

import pytest

from airflow_provider_duckling.assets.ducklake import duckling_asset
from airflow_provider_duckling.demo.report import lake_day_counts
from tests.support.runs import logged_text, run, snapshot_id, team_dag
from tests.support.stack import CATALOG_PASSWORD, CATALOG_USER, CLICKHOUSE_PASSWORD, DAYS

TEAM = 2


@pytest.fixture
def duckling(stack, request):
    tag = "af" + request.node.name.removeprefix("test_")[:18].replace("_", "-")
    return stack.new_duckling(TEAM, tag)


# ------------------------------------------------------------------ connection forms


def _hook_meta(conn_type: str):
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    HookMetaService.hook_meta_data.cache_clear()
    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == conn_type]
    return meta


def test_connection_forms_have_labelled_fields_placeholders_and_hidden_fields():
    # The clickhouse form is the official provider's, as it ships it: we add nothing to it.
    clickhouse = _hook_meta("clickhouse")
    assert clickhouse.hook_name == "ClickHouse"
    assert clickhouse.standard_fields.url_schema.title == "Database"
    assert set(clickhouse.extra_fields) == {"secure", "verify", "connect_timeout", "send_receive_timeout", "compress",
                                            "client_name", "session_settings", "client_kwargs"}

    ducklake = _hook_meta("ducklake")
    assert ducklake.standard_fields.url_schema.hidden is True
    assert ducklake.standard_fields.login.title == "Catalog user"
    assert ducklake.standard_fields.password.title == "Catalog password"
    assert set(ducklake.extra_fields) == {"aws_conn_id", "s3_endpoint_url", "console_url", "sslmode", "local_root"}
    assert ducklake.extra_fields["aws_conn_id"]["value"] == "aws_default"
    assert "verify-full" in ducklake.extra_fields["sslmode"]["schema"]["enum"]


def _test_button(monkeypatch, conn_type: str, **fields) -> tuple[bool, str]:
    """What the API's "test connection" route does: the tested connection in the environment as a URI,
    then ``Connection.test_connection()`` (the hook found through the providers manager)."""
    from airflow.models.connection import Connection

    conn = Connection(conn_id="duckling_button_test", conn_type=conn_type, **fields)
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLING_BUTTON_TEST", conn.get_uri())
    return conn.test_connection()


def test_clickhouse_test_button_really_connects(stack, monkeypatch):
    """The button is the official hook's (``SELECT 1`` through its DB-API connection)."""
    ok, message = _test_button(monkeypatch, "clickhouse", host="127.0.0.1", port=stack.clickhouse_port,
                               login="default", password=CLICKHOUSE_PASSWORD, schema="posthog")
    assert ok, message

    ok, message = _test_button(monkeypatch, "clickhouse", host="127.0.0.1", port=stack.clickhouse_port,
                               login="default", password="wrong-Secret-5150", schema="posthog")
    assert not ok and "wrong-Secret-5150" not in message
    assert "Authentication failed" in message or "password" in message.lower()


def test_ducklake_test_button_logs_in_to_the_catalog_and_reaches_aws(stack, monkeypatch):
    extra = json.dumps({"aws_conn_id": "aws_default", "s3_endpoint_url": stack.moto.url})
    ok, message = _test_button(monkeypatch, "ducklake", host="127.0.0.1", port=stack.postgres.port,
                               login=CATALOG_USER, password=CATALOG_PASSWORD, extra=extra)
    assert ok, message
    assert f"catalog login ok as {CATALOG_USER} on 127.0.0.1:{stack.postgres.port}" in message
    assert "AWS identity arn:aws:" in message

    ok, message = _test_button(monkeypatch, "ducklake", host="127.0.0.1", port=stack.postgres.port,
                               login=CATALOG_USER, password="not-the-pw-Secret-77", extra=extra)
    assert not ok and "cannot log in to the catalog server" in message
    assert "not-the-pw-Secret-77" not in message and CATALOG_PASSWORD not in message

    ok, message = _test_button(monkeypatch, "ducklake", login=CATALOG_USER, password=CATALOG_PASSWORD,
                               extra=json.dumps({"aws_conn_id": "no_such_aws_conn"}))
    assert not ok and "no_such_aws_conn" in message

    ok, message = _test_button(monkeypatch, "ducklake", extra=json.dumps({"sslmode": "sometimes"}))
    assert not ok and "sslmode must be one of" in message


def test_ducklake_test_button_in_embedded_mode_checks_the_directory(tmp_path, monkeypatch):
    ok, message = _test_button(monkeypatch, "ducklake", extra=json.dumps({"local_root": str(tmp_path / "lakes")}))
    assert ok, message
    assert "(writable)" in message and (tmp_path / "lakes").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ok, message = _test_button(monkeypatch, "ducklake", extra=json.dumps({"local_root": str(blocker / "lakes")}))
    assert not ok


def test_prefixed_extra_fields_are_read_too(stack, monkeypatch):
    """Connections made by older tools store extra fields as ``extra__<type>__<name>``."""
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook

    monkeypatch.setenv("AIRFLOW_CONN_PREFIXED_LAKE", json.dumps({
        "conn_type": "ducklake", "extra": {"extra__ducklake__s3_endpoint_url": stack.moto.url,
                                           "extra__ducklake__sslmode": "disable", "console_url": ""}}))
    settings = DuckLakeHook("prefixed_lake").settings()
    assert settings.s3_endpoint_url == stack.moto.url and settings.sslmode == "disable"
    assert settings.console_url is None


# ------------------------------------------------------------------ asset events, link, logs


def _asset_events(asset):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.partition_key, AssetEvent.extra, AssetEvent.source_dag_id, AssetEvent.source_task_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == asset.name, AssetModel.uri == asset.uri)
            .order_by(AssetEvent.id)
        ).all()
    return [tuple(r) for r in rows]


def _link(dag_run, task_id: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
            XComModel.task_id == task_id, XComModel.key == "_link_ExportedObjectsLink"))
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


def test_each_registered_partition_emits_an_asset_event_with_its_figures(stack, duckling, caplog, capfd):
    caplog.set_level(logging.INFO)
    asset = duckling_asset(TEAM, "events")
    register = team_dag(TEAM).get_task("register")
    assert [(o.name, o.uri) for o in register.outlets] == [(asset.name, asset.uri)]
    before = _asset_events(asset)

    dag_run = run(TEAM, DAYS[0])
    assert dag_run.state == "success"
    events = _asset_events(asset)[len(before):]
    key = f"{TEAM}_{DAYS[0].isoformat()}"
    rows = stack.counts[(TEAM, DAYS[0])]
    assert len(events) == 1
    partition_key, extra, source_dag, source_task = events[0]
    assert (partition_key, source_dag, source_task) == (key, f"duckling_events_backfill_team_{TEAM}", "register")
    (uri,) = stack.keys(duckling.bucket)
    size = stack.s3().head_object(Bucket=duckling.bucket, Key=uri)["ContentLength"]
    assert extra == {"rows": rows, "bytes": size, "files": 1, "snapshot_id": snapshot_id(duckling)}

    # The extra link points at the partition's directory in the bucket (the AWS console by default).
    prefix = f"backfill/events/team_id={TEAM}/year=2024/month=03/day=08/"
    for task_id in ("export", "register"):
        assert _link(dag_run, task_id) == (
            f"https://s3.console.aws.amazon.com/s3/buckets/{duckling.bucket}?region=us-east-1&prefix={prefix}")

    # One structured line per step, with the figures.
    text = logged_text(caplog, capfd)
    assert f"event=export_started partition={key} table=events" in text
    assert f"event=export_finished partition={key} table=events rows={rows} bytes={size}" in text
    assert f"event=partition_registered partition={key} table=events files=1 rows={rows} deleted_rows=0" in text
    assert f"event=cleanup partition={key} table=events deleted_rows=0" in text
    assert f"event=asset_event partition={key} table=events assets=1 rows={rows} bytes={size} files=1" in text

    # Dry runs and skipped registrations publish nothing: downstream DAGs only wake for real data.
    assert run(TEAM, DAYS[1], dry_run=True).state == "success"
    assert run(TEAM, DAYS[1], skip_ducklake_registration=True).state == "success"
    assert len(_asset_events(asset)) == len(before) + 1
    assert lake_day_counts(duckling, "events") == {DAYS[0]: rows}

    # A re-run replaces the day: a new event, the rows replaced (cleanup counted), a newer snapshot.
    assert run(TEAM, DAYS[0]).state == "success"
    (_, extra2, _, _), = _asset_events(asset)[len(before) + 1:]
    assert extra2["rows"] == rows and extra2["snapshot_id"] > extra["snapshot_id"]
    assert f"event=cleanup partition={key} table=events deleted_rows={rows}" in logged_text(caplog, capfd)


def test_the_extra_link_follows_a_configured_object_browser(stack, duckling, monkeypatch):
    conn = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
    conn["extra"]["console_url"] = "http://localhost:9001/browser/{bucket}/{prefix}"
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_DEFAULT", json.dumps(conn))
    dag_run = run(TEAM, DAYS[2])
    assert dag_run.state == "success"
    assert _link(dag_run, "export") == (
        f"http://localhost:9001/browser/{duckling.bucket}/backfill/events/team_id={TEAM}/year=2024/month=03/day=10/")


# ------------------------------------------------------------------ OpenLineage


def test_openlineage_facets_trace_clickhouse_to_s3_to_ducklake(stack, duckling):
    """Both operators run in-process on the real stack; the OpenLineage provider's own extractor manager
    then reads the facets they recorded."""
    from types import SimpleNamespace

    from airflow.providers.openlineage.extractors.manager import ExtractorManager
    from airflow.utils.state import TaskInstanceState

    from airflow_provider_duckling.operators.clickhouse_to_s3 import ClickHouseToDucklingS3Operator
    from airflow_provider_duckling.operators.ducklake_register import DuckLakeRegisterOperator

    day = DAYS[4]
    export = ClickHouseToDucklingS3Operator(task_id="export", team_id=TEAM, day=day.isoformat())
    register = DuckLakeRegisterOperator(task_id="register", team_id=TEAM, day=day.isoformat())
    assert register.get_openlineage_facets_on_complete(None).outputs == []  # nothing done, nothing claimed
    context = _Context(run_id="lineage_probe")
    result = export.execute(context)
    context.ti.xcoms["export"] = result
    register.execute(context)
    (key,) = result["object_keys"]
    size = stack.s3().head_object(Bucket=duckling.bucket, Key=key)["ContentLength"]
    rows = stack.counts[(TEAM, day)]

    manager, dag_run = ExtractorManager(), SimpleNamespace(run_id="lineage_probe")
    export_lineage = manager.extract_metadata(dag_run, export, TaskInstanceState.SUCCESS, None)
    assert [(d.namespace, d.name) for d in export_lineage.inputs] == [
        (f"clickhouse://127.0.0.1:{stack.clickhouse_port}", "posthog.events")]
    (s3_object,) = export_lineage.outputs
    assert (s3_object.namespace, s3_object.name) == (f"s3://{duckling.bucket}", key)
    stats = s3_object.facets["outputStatistics"]
    assert (stats.rowCount, stats.size, stats.fileCount) == (rows, size, 1)
    assert "timestamp" in [f.name for f in s3_object.facets["schema"].fields]

    register_lineage = manager.extract_metadata(dag_run, register, TaskInstanceState.SUCCESS, None)
    assert [(d.namespace, d.name) for d in register_lineage.inputs] == [(f"s3://{duckling.bucket}", key)]
    (lake_table,) = register_lineage.outputs
    assert (lake_table.namespace, lake_table.name) == (
        f"postgres://127.0.0.1:{stack.postgres.port}", f"{duckling.db_name}.posthog.events")
    assert lake_table.facets["outputStatistics"].rowCount == rows

    # The asset event was attached to the outlet with the partition key and the figures.
    accessor = context["outlet_events"][duckling_asset(TEAM, "events")]
    assert accessor.partition_keys == {f"{TEAM}_{day.isoformat()}"}
    assert accessor.extra == {"rows": rows, "bytes": size, "files": 1, "snapshot_id": snapshot_id(duckling)}


class _TI:
    """The TaskInstance calls the operators make, for running them outside a DAG run (the only
    stand-in in this file: the engines, the lake and the files are real)."""

    try_number = 1

    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}
        self.pushed: dict[str, object] = {}

    def xcom_pull(self, task_ids: str):
        return self.xcoms.get(task_ids)

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


class _Context(dict):
    def __init__(self, run_id: str) -> None:
        from airflow.sdk.execution_time.context import OutletEventAccessors

        super().__init__(run_id=run_id, ti=_TI(), outlet_events=OutletEventAccessors())

    @property
    def ti(self) -> _TI:
        return self["ti"]
