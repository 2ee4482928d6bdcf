"""The real test stack: ClickHouse (chdb behind its HTTP interface), moto S3/STS, PostgreSQL catalogs,
and an Airflow metadata DB; plus helpers that create ducklings on it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from airflow_provider_duckling.registry.catalog import Duckling, write_registry
from airflow_provider_duckling.scheduling.airflow_env import connection_env
from tests.support.services import MotoServer, PostgresServer

# Recognisable test secrets: a later suite scans logs for them.
CATALOG_PASSWORD = "catalog-pw-Secret7731"
CLICKHOUSE_PASSWORD = "clickhouse-pw-Secret4410"
BASE_AWS_KEY_ID = "AKIABASEKEYSECRET001"
BASE_AWS_SECRET = "base-aws-secret-Secret9902"
CATALOG_USER = "duckling_writer"

TEAMS = [1, 2, 3]
OTHER_TEAM = 99  # has events on the same days, but no duckling
DAYS = [dt.date(2024, 3, 8) + dt.timedelta(days=n) for n in range(5)]


@dataclass
class Stack:
    root: Path
    registry: Path
    postgres: PostgresServer
    moto: MotoServer
    clickhouse_port: int
    clickhouse_pid: int = 0
    counts: dict[tuple[int, dt.date], int] = field(default_factory=dict)
    ducklings: dict[int, Duckling] = field(default_factory=dict)
    all_ducklings: list[Duckling] = field(default_factory=list)

    def connection_env(self) -> dict[str, str]:
        return dict([
            connection_env(
                "clickhouse_default", "clickhouse", host="127.0.0.1", port=self.clickhouse_port,
                login="default", password=CLICKHOUSE_PASSWORD, schema="posthog",
            ),
            connection_env(
                "ducklake_default", "ducklake", login=CATALOG_USER, password=CATALOG_PASSWORD,
                extra={"aws_conn_id": "aws_default", "s3_endpoint_url": self.moto.url},
            ),
            connection_env(
                "aws_default", "aws", login=BASE_AWS_KEY_ID, password=BASE_AWS_SECRET,
                extra={"endpoint_url": self.moto.url, "region_name": "us-east-1"},
            ),
        ])

    def s3(self):
        return boto3.client(
            "s3", endpoint_url=self.moto.url, aws_access_key_id=BASE_AWS_KEY_ID,
            aws_secret_access_key=BASE_AWS_SECRET, region_name="us-east-1",
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def new_duckling(self, team_id: int, tag: str, start_date: dt.date | None = DAYS[0]) -> Duckling:
        """A fresh duckling (own bucket and catalog database) for ``team_id``, added to the registry."""
        name = f"{tag}-t{team_id}".lower().replace("_", "-")
        db_name = f"lake_{tag}_t{team_id}".lower().replace("-", "_")
        self.postgres.create_database(db_name)
        self.s3().create_bucket(Bucket=name)
        duckling = Duckling(
            team_id=team_id, bucket=name, bucket_region="us-east-1", db_host="127.0.0.1",
            db_port=self.postgres.port, db_name=db_name,
            cross_account_role_arn=f"arn:aws:iam::123456789012:role/duckling-{name}",
            cross_account_external_id=f"ext-id-{name}-Secret", start_date=start_date,
        )
        self.ducklings[team_id] = duckling
        self.all_ducklings.append(duckling)
        write_registry(self.ducklings, self.registry)
        return duckling

    def use(self, *ducklings: Duckling) -> None:
        """Make exactly these ducklings the registry's content."""
        self.ducklings = {d.team_id: d for d in ducklings}
        write_registry(self.ducklings, self.registry)



def use_strict_sts(monkeypatch, url: str, key: dict) -> str:
    """Connections ``aws_strict`` (the strict STS server's user) and ``ducklake_strict`` (the stack's catalogs,
    reaching roles through ``aws_strict``); returns the ducklake connection id for registry entries."""
    import json
    import os

    monkeypatch.setenv("AIRFLOW_CONN_AWS_STRICT", json.dumps({
        "conn_type": "aws", "login": key["AccessKeyId"], "password": key["SecretAccessKey"],
        "extra": {"endpoint_url": url, "region_name": "us-east-1"},
    }))
    lake_conn = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
    lake_conn["extra"]["aws_conn_id"] = "aws_strict"
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_STRICT", json.dumps(lake_conn))
    return "ducklake_strict"
