"""ClickHouse writing with its own identity, and the limit role chaining puts on the assumed-role session.

The world here is stricter than the shared stack: a moto with IAM enforced, so S3 answers AccessDenied to an
identity its policies do not grant, and a ClickHouse (chdb behind its HTTP interface) of its own whose process
holds its own credentials in its environment (IAM user ``clickhouse``, granted only bucket ``own-id-granted``),
like a ClickHouse host with an instance profile. Airflow's identity (user ``airflow``) may only assume the
duckling role, which may read and write both buckets: it registers; ClickHouse writes.
A recording proxy sits in front of that ClickHouse, so every byte the worker sent it is inspected.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest

from airflow_provider_duckling.access.credentials import assume_duckling_role
from airflow_provider_duckling.common.errors import ConfigurationError
from airflow_provider_duckling.common.quoting import clickhouse_str
from airflow_provider_duckling.demo.sample_data import seed_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry.catalog import Duckling
from tests.conftest import SESSION_DIR
from tests.support.chdb_http_server import start_chdb_http_server
from tests.support.faulty_proxy import FaultyProxy
from tests.support.runs import catalog_tables, logged_text, run
from tests.support.services import iam_enforcing_moto
from tests.support.stack import CATALOG_PASSWORD, CATALOG_USER, CLICKHOUSE_PASSWORD, DAYS

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/duckling-own"
GRANTED, NOT_GRANTED = "own-id-granted", "own-id-not-granted"
TEAM, OTHER_TEAM = 290, 291


def _bucket_policy(*buckets: str) -> str:
    resources = [f"arn:aws:s3:::{b}{suffix}" for b in buckets for suffix in ("", "/*")]
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": resources}]})


@dataclass
class OwnIdentityWorld:
    moto_url: str
    admin: dict
    clickhouse_key: dict
    collection_key: dict
    airflow_key: dict
    clickhouse_port: int
    counts: dict[tuple[int, object], int]

    def s3(self):
        return boto3.client("s3", endpoint_url=self.moto_url, region_name="us-east-1",
                            aws_access_key_id=self.admin["AccessKeyId"], aws_secret_access_key=self.admin["SecretAccessKey"])

    def keys(self, bucket: str) -> list[str]:
        return sorted(o["Key"] for o in self.s3().list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture(scope="module")
def world(stack) -> Iterator[OwnIdentityWorld]:
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    with iam_enforcing_moto(SESSION_DIR, "admin", everything) as (url, admin):
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id=admin["AccessKeyId"],
                           aws_secret_access_key=admin["SecretAccessKey"])
        users = {}
        for user, policy in (
            ("clickhouse", _bucket_policy(GRANTED)),  # ClickHouse's own identity: what the bucket policy grants
            ("collection", _bucket_policy(NOT_GRANTED)),  # the identity in ClickHouse's named collection
            ("airflow", json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE}]})),
        ):
            iam.create_user(UserName=user)
            users[user] = iam.create_access_key(UserName=user)["AccessKey"]
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=policy)
        iam.create_role(RoleName="duckling-own", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}))
        iam.put_role_policy(RoleName="duckling-own", PolicyName="lake", PolicyDocument=_bucket_policy(GRANTED, NOT_GRANTED))
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=admin["AccessKeyId"],
                          aws_secret_access_key=admin["SecretAccessKey"])
        for bucket in (GRANTED, NOT_GRANTED):
            s3.create_bucket(Bucket=bucket)

        # ClickHouse's process holds its own identity in its environment; nothing of it is in the worker's.
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
        os.environ.update(AWS_ACCESS_KEY_ID=users["clickhouse"]["AccessKeyId"],
                          AWS_SECRET_ACCESS_KEY=users["clickhouse"]["SecretAccessKey"], AWS_REGION="us-east-1")
        try:
            server = start_chdb_http_server(SESSION_DIR / "chdb-own-identity", password=CLICKHOUSE_PASSWORD)
        finally:
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
                os.environ.pop(k, None)
            os.environ.update(saved)
        os.environ["AIRFLOW_CONN_CLICKHOUSE_OWN_IDENTITY"] = json.dumps({
            "conn_type": "clickhouse", "host": "127.0.0.1", "port": server.port, "login": "default",
            "password": CLICKHOUSE_PASSWORD, "schema": "posthog"})
        try:
            counts = seed_events(ClickHouseHook("clickhouse_own_identity"), [TEAM, OTHER_TEAM], DAYS[:1])
            yield OwnIdentityWorld(url, admin, users["clickhouse"], users["collection"], users["airflow"], server.port, counts)
        finally:
            server.stop()


@pytest.fixture
def own_identity(world, monkeypatch) -> Iterator[FaultyProxy]:
    """Connections to this world, its ClickHouse behind a recording proxy."""
    proxy = FaultyProxy(world.clickhouse_port, record=True)
    monkeypatch.setenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT", json.dumps({
        "conn_type": "clickhouse", "host": "127.0.0.1", "port": proxy.port, "login": "default",
        "password": CLICKHOUSE_PASSWORD, "schema": "posthog"}))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_OWN", json.dumps({
        "conn_type": "aws", "login": world.airflow_key["AccessKeyId"], "password": world.airflow_key["SecretAccessKey"],
        "extra": {"endpoint_url": world.moto_url, "region_name": "us-east-1"}}))
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_OWN", json.dumps({
        "conn_type": "ducklake", "login": CATALOG_USER, "password": CATALOG_PASSWORD,
        "extra": {"aws_conn_id": "aws_own", "s3_endpoint_url": world.moto_url}}))
    try:
        yield proxy
    finally:
        proxy.close()


def _duckling(stack, team: int, bucket: str, tag: str, **changes) -> Duckling:
    db_name = f"lake_{tag}_t{team}"
    stack.postgres.create_database(db_name)
    duckling = Duckling(
        team_id=team, bucket=bucket, bucket_region="us-east-1", db_host="127.0.0.1", db_port=stack.postgres.port,
        db_name=db_name, cross_account_role_arn=ROLE, cross_account_external_id=f"ext-{tag}-Secret",
        catalog_conn_id="ducklake_own", start_date=DAYS[0], export_identity="clickhouse",
    )
    return dataclasses.replace(duckling, **changes)


def _lake_rows(duckling: Duckling) -> int:
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook

    with DuckLakeHook().attach(duckling, read_only=True) as con:
        return con.execute("SELECT count(*) FROM lake.posthog.events").fetchone()[0]


def _sent(proxy: FaultyProxy) -> bytes:
    return b"".join(bytes(c) for c in proxy.recorded)


def test_clickhouse_writes_with_its_own_identity_and_the_worker_hands_it_no_credential(stack, world, own_identity):
    proxy, counts = own_identity, world.counts
    duckling = _duckling(stack, TEAM, GRANTED, "ownid")
    stack.use(duckling)

    assert run(TEAM, DAYS[0]).state == "success"

    assert _lake_rows(duckling) == counts[(TEAM, DAYS[0])] > 0
    assert len(world.keys(GRANTED)) == 1
    sent = _sent(proxy)
    assert b"INSERT INTO FUNCTION s3(" in sent  # the export went through the recording proxy
    for name in (b"dest_key_id", b"dest_secret", b"dest_token"):
        assert name not in sent  # no credential parameter at all
    assert b"ASIA" not in sent  # no session key id (moto's start with ASIA, like AWS's)
    for value in (world.clickhouse_key["AccessKeyId"], world.clickhouse_key["SecretAccessKey"],
                  world.airflow_key["AccessKeyId"], world.airflow_key["SecretAccessKey"]):
        assert value.encode() not in sent


def test_a_bucket_that_does_not_grant_clickhouse_fails_clearly_and_registers_nothing(
    stack, world, own_identity, caplog, capfd
):
    duckling = _duckling(stack, OTHER_TEAM, NOT_GRANTED, "ownid_denied")
    stack.use(duckling)

    assert run(OTHER_TEAM, DAYS[0]).state == "failed"

    text = logged_text(caplog, capfd)
    assert "Access Denied" in text or "403" in text  # S3 refused ClickHouse's identity
    assert "bucket policy" in text  # …and the line says where to look
    assert "retryable=false" in text  # the same request would be refused again
    assert catalog_tables(stack, duckling) == 0  # the role could have registered; nothing was
    assert duckling.cross_account_external_id not in text


def test_a_named_collection_carries_clickhouses_identity(stack, world, own_identity, monkeypatch):
    """The collection's identity is the one granted ``own-id-not-granted`` (the process's own is not): the
    export succeeds there only if the collection's credentials were used."""
    proxy, counts = own_identity, world.counts
    key, secret = (clickhouse_str(world.collection_key[k]) for k in ("AccessKeyId", "SecretAccessKey"))
    ClickHouseHook("clickhouse_own_identity").execute(  # the ClickHouse admin's doing (DDL takes no parameters)
        f"CREATE NAMED COLLECTION IF NOT EXISTS duckling_s3 AS access_key_id = {key}, secret_access_key = {secret}"
    )
    monkeypatch.setenv("AIRFLOW__DUCKLING__CLICKHOUSE_S3_COLLECTION", "duckling_s3")
    duckling = _duckling(stack, OTHER_TEAM, NOT_GRANTED, "ownid_coll")
    stack.use(duckling)
    for key in world.keys(NOT_GRANTED):  # an earlier test's anonymous attempt may have left a file
        world.s3().delete_object(Bucket=NOT_GRANTED, Key=key)

    assert run(OTHER_TEAM, DAYS[0]).state == "success"

    assert _lake_rows(duckling) == counts[(OTHER_TEAM, DAYS[0])] > 0
    assert b"s3(`duckling_s3`, url = {dest_url:String}" in _sent(proxy)
    assert world.collection_key["SecretAccessKey"].encode() not in _sent(proxy)


def test_registry_entry_overrides_the_deployment_setting(stack, world, own_identity, monkeypatch):
    """``[duckling] export_identity = clickhouse`` for the deployment; an entry saying ``assumed_role`` hands
    ClickHouse the session, in the request body."""
    proxy, counts = own_identity, world.counts
    monkeypatch.setenv("AIRFLOW__DUCKLING__EXPORT_IDENTITY", "clickhouse")
    duckling = _duckling(stack, TEAM, GRANTED, "ownid_override", export_identity="assumed_role")
    stack.use(duckling)

    assert run(TEAM, DAYS[0]).state == "success"

    assert _lake_rows(duckling) == counts[(TEAM, DAYS[0])]
    assert b"dest_token" in _sent(proxy)


@pytest.mark.parametrize("value", ["ClickHouse", "clickhouse ", "own", ""])
def test_a_bad_export_identity_is_refused_in_one_line(value, monkeypatch):
    from airflow_provider_duckling.common.errors import RegistryError
    from airflow_provider_duckling.registry.catalog import parse_registry
    from airflow_provider_duckling.registry.settings import export_identity

    if value:
        monkeypatch.setenv("AIRFLOW__DUCKLING__EXPORT_IDENTITY", value)
        with pytest.raises(ConfigurationError, match=r"^\[duckling\] export_identity must be assumed_role or clickhouse"):
            export_identity()
    entry = {"team_id": 5, "bucket": "b-5", "bucket_region": "us-east-1", "db_host": "h", "db_name": "d",
             "cross_account_role_arn": ROLE, "cross_account_external_id": "ext-5", "export_identity": value}
    with pytest.raises(RegistryError, match="invalid export_identity: expected assumed_role or clickhouse$"):
        parse_registry({"ducklings": [entry]})


# ---------------------------------------------------------------- role chaining


@pytest.fixture
def chained_identity(stack, monkeypatch) -> str:
    """An AWS connection whose identity is itself an assumed role (what IRSA or an instance profile gives)."""
    sts = boto3.client("sts", endpoint_url=stack.moto.url, region_name="us-east-1",
                       aws_access_key_id="AKIABASEKEYSECRET001", aws_secret_access_key="base-aws-secret-Secret9902")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/airflow-worker", RoleSessionName="irsa")["Credentials"]
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CHAINED", json.dumps({
        "conn_type": "aws", "login": creds["AccessKeyId"], "password": creds["SecretAccessKey"],
        "extra": {"aws_session_token": creds["SessionToken"], "endpoint_url": stack.moto.url, "region_name": "us-east-1"}}))
    lake = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
    lake["extra"]["aws_conn_id"] = "aws_chained"
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_CHAINED", json.dumps(lake))
    return "aws_chained"


def test_a_session_longer_than_role_chaining_grants_is_refused_before_anything_is_written(
    stack, chained_identity, monkeypatch, caplog, capfd
):
    monkeypatch.setenv("AIRFLOW__DUCKLING__ROLE_SESSION_SECONDS", "7200")
    duckling = dataclasses.replace(stack.new_duckling(292, "chained"), catalog_conn_id="ducklake_chained")
    stack.use(duckling)

    with pytest.raises(ConfigurationError) as info:
        assume_duckling_role(chained_identity, duckling)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("[duckling] role_session_seconds is 7200 but 'aws_chained''s identity is itself an assumed role")
    assert "at most 3600 s" in message and "export_identity = clickhouse" in message

    assert run(292, DAYS[0]).state == "failed"
    text = logged_text(caplog, capfd)
    assert "role_session_seconds is 7200" in text
    assert stack.keys(duckling.bucket) == []
    assert duckling.cross_account_external_id not in text


def test_an_hour_is_granted_to_a_chained_identity_and_longer_to_a_user(stack, chained_identity, monkeypatch):
    duckling = stack.new_duckling(293, "chained-ok")
    assert assume_duckling_role(chained_identity, duckling, duration_seconds=3600).session_token
    monkeypatch.setenv("AIRFLOW__DUCKLING__ROLE_SESSION_SECONDS", "7200")
    assert assume_duckling_role("aws_default", duckling).session_token  # a user's identity is not chained
