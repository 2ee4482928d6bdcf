"""Isolation: a team's data only ever goes to its own bucket and its own catalog. A registry entry that
points one team at another's bucket or catalog is refused, and nothing is written."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_provider_duckling.common.errors import RegistryError
from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import parse_registry, write_registry
from tests.support.runs import logged_text, run, snapshot_id
from tests.support.stack import DAYS


def test_registry_refuses_a_shared_bucket_or_catalog(stack):
    a = stack.new_duckling(1, "iso-reg")
    b = stack.new_duckling(2, "iso-reg")
    with pytest.raises(RegistryError, match="bucket iso-reg-t1 is already team 1's"):
        parse_registry({"ducklings": [a.to_dict(), {**b.to_dict(), "bucket": a.bucket}]})
    with pytest.raises(RegistryError, match="catalog lake_iso_reg_t1 on 127.0.0.1 is already team 1's"):
        parse_registry({"ducklings": [a.to_dict(), {**b.to_dict(), "db_name": a.db_name}]})


def test_a_catalog_of_another_team_is_refused_before_anything_is_written(stack, caplog, capfd):
    owner = stack.new_duckling(1, "iso-owner")
    assert run(1, DAYS[0]).state == "success"
    before = snapshot_id(owner)

    # Team 2's entry points at team 1's catalog database (with its own bucket): a copy-paste mistake.
    intruder = dataclasses.replace(stack.new_duckling(2, "iso-intruder"), db_name=owner.db_name)
    stack.ducklings[2] = intruder
    stack.use(intruder)
    assert run(2, DAYS[0]).state == "failed"
    assert "belongs to another duckling; refusing to touch it" in logged_text(caplog, capfd)
    assert stack.keys(intruder.bucket) == []
    assert snapshot_id(owner) == before
    assert lake_day_counts(owner, "events") == {DAYS[0]: stack.counts[(1, DAYS[0])]}


def test_the_owner_mark_refuses_another_team_even_with_the_same_data_path(stack):
    owner = stack.new_duckling(3, "iso-mark")
    with DuckLakeHook().attach(owner):
        pass  # first use claims the catalog
    impostor = dataclasses.replace(owner, team_id=4)
    write_registry([impostor], stack.registry)
    from airflow_provider_duckling.common.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="belongs to team 3, not to team 4"):
        with DuckLakeHook().attach(impostor):
            pass


def test_registration_refuses_files_outside_the_partitions_own_prefix(stack):
    from airflow_provider_duckling.common.errors import RegistrationError
    from airflow_provider_duckling.domain.partitions import Partition
    from airflow_provider_duckling.domain.tables import EVENTS
    from airflow_provider_duckling.transfer.lake import register_files

    duckling = stack.new_duckling(1, "iso-prefix")
    storage = DuckLakeHook().storage(duckling)
    with DuckLakeHook().attach(duckling, storage) as con:
        for uri in ("s3://other-bucket/backfill/events/team_id=1/year=2024/month=03/day=08/x.parquet",
                    f"{storage.data_path}backfill/events/team_id=2/year=2024/month=03/day=08/x.parquet",
                    f"{storage.data_path}backfill/events/team_id=1/year=2024/month=03/day=09/x.parquet"):
            with pytest.raises(RegistrationError, match="refusing files outside"):
                register_files(con, EVENTS, Partition(1, DAYS[0]), [uri], 1, storage.data_path)
