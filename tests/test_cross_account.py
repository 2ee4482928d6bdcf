"""The cross-account path: Airflow's identity assumes the duckling's role (moto STS) with the registry's
external id, and both engines use the returned session credentials."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, unquote

import boto3

from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from tests.support.stack import BASE_AWS_KEY_ID


def _recorded_requests(moto) -> list[dict]:
    entries = [json.loads(line) for line in moto.get("/moto-api/recorder/download-recording").decode().splitlines() if line.strip()]
    for entry in entries:
        body = entry.get("body") or ""
        entry["text"] = base64.b64decode(body).decode(errors="replace") if entry.get("body_encoded") else body
    return entries


def test_role_is_assumed_with_external_id_and_s3_secret_uses_session_credentials(stack, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DUCKLING__ROLE_SESSION_SECONDS", "7200")
    duckling = stack.new_duckling(5, "xacct")
    stack.moto.post("/moto-api/recorder/reset-recording")
    stack.moto.post("/moto-api/recorder/start-recording")
    try:
        hook = DuckLakeHook()
        storage = hook.storage(duckling)
    finally:
        stack.moto.post("/moto-api/recorder/stop-recording")

    calls = [parse_qs(e["text"]) for e in _recorded_requests(stack.moto) if "Action=AssumeRole" in e["text"]]
    assert len(calls) == 1
    assert calls[0]["RoleArn"] == [duckling.cross_account_role_arn]
    assert calls[0]["ExternalId"] == [duckling.cross_account_external_id]
    assert calls[0]["RoleSessionName"] == ["duckling-team-5"]
    assert calls[0]["DurationSeconds"] == ["7200"]  # [duckling] role_session_seconds

    creds = storage.credentials
    assert creds.key_id != BASE_AWS_KEY_ID and creds.session_token
    identity = boto3.client(
        "sts", endpoint_url=stack.moto.url, region_name="us-east-1", aws_access_key_id=creds.key_id,
        aws_secret_access_key=creds.secret, aws_session_token=creds.session_token,
    ).get_caller_identity()
    assert identity["Arn"].endswith(f"assumed-role/duckling-{duckling.bucket}/duckling-team-5")

    stack.s3().put_object(Bucket=duckling.bucket, Key="probe.csv", Body=b"x\n1\n")
    stack.moto.post("/moto-api/recorder/reset-recording")
    stack.moto.post("/moto-api/recorder/start-recording")
    try:
        with hook.attach(duckling, storage) as con:
            secrets = con.execute("SELECT scope, secret_string FROM duckdb_secrets() WHERE type = 's3'").fetchall()
            assert con.execute(f"SELECT x FROM 's3://{duckling.bucket}/probe.csv'").fetchall() == [(1,)]
    finally:
        stack.moto.post("/moto-api/recorder/stop-recording")
    assert len(secrets) == 1
    scope, text = secrets[0]
    assert scope == [f"s3://{duckling.bucket}"]
    assert f"key_id={creds.key_id}" in text
    assert creds.secret not in text and creds.session_token not in text  # DuckDB redacts them
    reads = [e for e in _recorded_requests(stack.moto) if "probe.csv" in e["url"]]
    assert reads
    for read in reads:
        assert f"Credential={creds.key_id}/" in read["headers"].get("Authorization", "")
        assert read["headers"].get("X-Amz-Security-Token") == creds.session_token


def test_export_writes_with_the_assumed_credentials(stack):
    """ClickHouse's s3() call is signed with the session credentials, not Airflow's base identity."""
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.domain.tables import EVENTS
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.transfer.export import export_partition
    from tests.support.stack import DAYS

    duckling = stack.new_duckling(1, "xacct-export")
    storage = DuckLakeHook().storage(duckling)
    stack.moto.post("/moto-api/recorder/reset-recording")
    stack.moto.post("/moto-api/recorder/start-recording")
    try:
        result = export_partition(ClickHouseHook(), storage, EVENTS, Partition(1, DAYS[0]), "signed")
    finally:
        stack.moto.post("/moto-api/recorder/stop-recording")
    touching = [e for e in _recorded_requests(stack.moto) if result.object_keys[0] in unquote(e["url"])]
    puts = [e for e in touching if e["method"] == "PUT"]
    assert puts, "ClickHouse wrote nothing to the bucket"
    for request in touching:
        assert f"Credential={storage.credentials.key_id}/" in request["headers"].get("Authorization", "")
        assert request["headers"].get("X-Amz-Security-Token") == storage.credentials.session_token
