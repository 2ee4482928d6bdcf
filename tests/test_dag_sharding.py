"""Thousands of teams parse as several DAG files: ``…_shard_K_of_N.py`` builds the teams with
``team_id % N == K``; together the shards build every DAG exactly once."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_duckling.registry.catalog import Duckling, write_registry
from airflow_provider_duckling.scheduling.dag_factory import (
    HEALTH_DAG_ID,
    MAINTENANCE_DAG_ID,
    build_dags,
    shard_of,
)


def _duckling(team: int) -> Duckling:
    return Duckling(team_id=team, bucket=f"shard-t{team}", bucket_region="us-east-1", db_host="127.0.0.1",
                    db_name=f"lake_t{team}", cross_account_role_arn="arn:aws:iam::123456789012:role/r",
                    cross_account_external_id=f"ext-{team}", start_date=dt.date(2024, 1, 1))


def test_shard_file_names():
    assert shard_of("dags/duckling_backfill.py") == (0, 1)
    assert shard_of("dags/duckling_backfill_shard_3_of_8.py") == (3, 8)
    with pytest.raises(ValueError, match="shard 8 of 8 does not exist"):
        shard_of("duckling_backfill_shard_8_of_8.py")


def test_shards_build_every_team_dag_exactly_once(tmp_path, airflow_db):
    registry = tmp_path / "ducklings.yaml"
    write_registry([_duckling(team) for team in range(1, 12)], registry)
    whole = build_dags(registry, dag_file=tmp_path / "duckling_backfill.py")
    parts = [build_dags(registry, dag_file=tmp_path / f"duckling_backfill_shard_{k}_of_3.py") for k in range(3)]
    ids = [dag_id for part in parts for dag_id in part]
    assert len(ids) == len(set(ids)) and set(ids) == set(whole)
    assert HEALTH_DAG_ID in parts[0] and MAINTENANCE_DAG_ID in parts[0]
    assert not any(HEALTH_DAG_ID in part for part in parts[1:])
    assert {d for d in parts[1] if "_team_" in d} == {
        f"duckling_{table}_backfill_team_{team}" for team in (1, 4, 7, 10) for table in ("events", "persons")}
