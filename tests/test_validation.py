"""Bad input is refused with a message that names it: partition keys, days, team ids, registry entries,
ClickHouse settings, connections."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_duckling.common.errors import (
    ConfigurationError,
    PartitionError,
    RegistryError,
    UnknownDucklingError,
)
from airflow_provider_duckling.common.quoting import (
    clickhouse_ident,
    clickhouse_str,
    duckdb_ident,
    duckdb_literal,
    duckdb_str,
)
from airflow_provider_duckling.domain.partitions import Partition, parse_day, run_token, validate_team_id
from airflow_provider_duckling.registry.catalog import (
    Duckling,
    get_duckling,
    load_registry,
    parse_registry,
    write_registry,
)
from airflow_provider_duckling.transfer.export import merged_settings, settings_clause

GOOD = {
    "team_id": 12345,
    "bucket": "acme-duckling",
    "bucket_region": "us-east-1",
    "db_host": "catalog.example.internal",
    "db_name": "ducklake",
    "cross_account_role_arn": "arn:aws:iam::111122223333:role/duckling-writer",
    "cross_account_external_id": "posthog-12345",
}


def test_partition_key_round_trip_and_paths():
    p = Partition.parse("12345_2024-01-15")
    assert (p.team_id, p.day, p.key) == (12345, dt.date(2024, 1, 15), "12345_2024-01-15")
    assert p.object_key("events", "run-1") == "backfill/events/team_id=12345/year=2024/month=01/day=15/run-1.parquet"
    assert p.start == dt.datetime(2024, 1, 15, tzinfo=dt.UTC) and p.end == dt.datetime(2024, 1, 16, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "key, message",
    [
        ("12345-2024-01-15", "expected {team_id}_{YYYY-MM-DD}"),
        ("abc_2024-01-15", "expected {team_id}_{YYYY-MM-DD}"),
        ("12345_2024-13-01", "invalid day"),
        ("12345_2024-02-30", "invalid day"),
        ("0_2024-01-15", "invalid team id"),
        ("12345_1969-12-31", "before 1970-01-01"),
        ("12345_2999-01-01", "has not ended"),
        ("12345_2024-01-15; DROP TABLE x", "expected {team_id}_{YYYY-MM-DD}"),
        ("", "expected {team_id}_{YYYY-MM-DD}"),
    ],
)
def test_bad_partition_keys_are_refused(key, message):
    with pytest.raises(PartitionError, match=message.replace("{", r"\{").replace("}", r"\}")):
        Partition.parse(key)


def test_today_is_not_a_closed_day():
    today = dt.datetime.now(dt.UTC).date()
    with pytest.raises(PartitionError, match="has not ended"):
        parse_day(today.isoformat())
    assert parse_day((today - dt.timedelta(days=1)).isoformat()) == today - dt.timedelta(days=1)


@pytest.mark.parametrize("team", [-1, 0, True, "12a", 2**63, None, 1.5])
def test_bad_team_ids(team):
    with pytest.raises(PartitionError, match="invalid team id"):
        validate_team_id(team)


def test_run_token_is_file_name_safe_and_unique_per_attempt():
    token = run_token("scheduled__2024-01-15T00:00:00+00:00", 2)
    assert token == "scheduled__2024-01-15T00_00_00_00_00-try2"
    assert run_token("../../etc/passwd", 1) == "etc_passwd-try1"
    assert run_token("x", 1) != run_token("x", 2)


def test_good_registry_entry_loads(tmp_path):
    path = tmp_path / "r.yaml"
    write_registry([Duckling.from_dict({**GOOD, "start_date": "2024-01-01"})], path)
    loaded = load_registry(path)[12345]
    assert loaded.bucket == "acme-duckling" and loaded.start_date == dt.date(2024, 1, 1)
    assert loaded.catalog_conn_id == "ducklake_default"
    assert "posthog-12345" not in repr(loaded)  # the external id never shows in a repr
    with pytest.raises(UnknownDucklingError, match="team 7 has no duckling"):
        get_duckling(7, path)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("team_id", -5, "invalid team id"),
        ("bucket", "Bad_Bucket", "invalid bucket"),
        ("bucket", "a", "invalid bucket"),
        ("bucket", "bucket/../other", "invalid bucket"),
        ("bucket", "192.168.1.1", "invalid bucket"),
        ("bucket", "x'; DROP TABLE t; --", "invalid bucket"),
        ("bucket_region", "mars-1", "invalid bucket_region"),
        ("db_host", "host name with spaces", "invalid db_host"),
        ("db_host", "h' password='x", "invalid db_host"),
        ("db_name", "db; DROP DATABASE x", "invalid db_name"),
        ("db_name", "1abc", "invalid db_name"),
        ("cross_account_role_arn", "arn:aws:iam::123:role/x", "invalid cross_account_role_arn"),
        ("cross_account_role_arn", "arn:aws:s3:::bucket", "invalid cross_account_role_arn"),
        ("cross_account_external_id", "x", "invalid cross_account_external_id"),
        ("cross_account_external_id", "has space'quote", "invalid cross_account_external_id"),
        ("start_date", "1969-01-01", "before 1970"),
        ("start_date", "yesterday", "expected YYYY-MM-DD"),
        ("catalog_conn_id", "bad conn id!", "invalid catalog_conn_id"),
        ("db_port", 70000, "invalid db_port"),
        ("surprise", 1, "unknown field"),
    ],
)
def test_bad_registry_entries_are_refused(field, value, message):
    with pytest.raises(RegistryError, match=message):
        Duckling.from_dict({**GOOD, field: value})


def test_registry_entry_errors_name_the_entry_and_never_echo_the_external_id():
    with pytest.raises(RegistryError) as info:
        parse_registry({"ducklings": [GOOD, {**GOOD, "bucket_region": "nowhere"}]})
    assert "ducklings[1]" in str(info.value) and "posthog-12345" not in str(info.value)
    with pytest.raises(RegistryError, match="listed twice"):
        parse_registry({"ducklings": [GOOD, GOOD]})
    with pytest.raises(RegistryError, match="'ducklings' list"):
        parse_registry(["not", "a", "mapping"])


def test_unreadable_registry_file_is_a_clear_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("ducklings: [unclosed")
    with pytest.raises(RegistryError, match="cannot read duckling registry"):
        load_registry(path)


def test_an_unchanged_registry_is_read_from_its_validated_json_and_any_edit_is_parsed_again(tmp_path, monkeypatch):
    from airflow_provider_duckling.registry import state

    parses = []
    real_parse = state.parse_registry_text
    monkeypatch.setattr(state, "parse_registry_text", lambda *a: parses.append(1) or real_parse(*a))  # a spy only
    registry, dates, last_good = tmp_path / "r.yaml", tmp_path / "dates.json", tmp_path / "last_good.json"
    write_registry([Duckling.from_dict({**GOOD, "team_id": t, "bucket": f"b-{t}", "db_name": f"d{t}"}) for t in (1, 2)],
                   registry)

    def load():
        return state.load_dag_inputs(registry, dates, last_good)

    first = load()
    assert sorted(first.ducklings) == [1, 2] and len(parses) == 1
    written = last_good.stat().st_mtime_ns
    assert load().ducklings == first.ducklings and len(parses) == 1  # same text: the YAML is not parsed again
    assert last_good.stat().st_mtime_ns == written  # and nothing is rewritten

    registry.write_text(registry.read_text().replace("bucket: b-2", "bucket: b-9"))  # an edit of the same size
    edited = load()
    assert edited.ducklings[2].bucket == "b-9" and len(parses) == 2
    assert load().ducklings[2].bucket == "b-9" and len(parses) == 2

    registry.write_text(registry.read_text().replace("bucket: b-9", "bucket: b-1"))  # now invalid: a shared bucket
    broken = load()
    assert broken.problems and "bucket b-1 is already team 1's" in broken.problems[0]
    assert broken.ducklings[2].bucket == "b-9"  # the last good registry stays in force


def test_clickhouse_settings_are_merged_and_validated():
    merged = merged_settings({"max_execution_time": 60, "max_threads": 2})
    assert merged["max_execution_time"] == 60 and merged["s3_truncate_on_insert"] == 1
    assert "max_threads = 2" in settings_clause(merged)
    for bad in ({"max threads": 1}, {"x; DROP": 1}, {"max_threads": [1]}, {"max_threads": float("nan")}, "max_threads=1"):
        with pytest.raises(ConfigurationError, match="clickhouse_settings"):
            merged_settings(bad)
    assert settings_clause({"s": "it's \\ fine"}) == "SETTINGS s = 'it\\'s \\\\ fine'"


def test_quoting_helpers():
    assert duckdb_ident('a"b') == '"a""b"'
    assert duckdb_str("it's") == "'it''s'"
    assert clickhouse_ident("a`b") == "`a\\`b`"
    assert clickhouse_str("a'\\b") == "'a\\'\\\\b'"


@pytest.mark.parametrize("value, sql_type", [
    ("it's a \\ back'slash'; DROP TABLE x; --", "VARCHAR"), ("ünï\ncode\t", "VARCHAR"), ("", "VARCHAR"),
    (-9_223_372_036_854_775_808, "BIGINT"), (12345, "INTEGER"), (True, "BOOLEAN"), (None, '"NULL"'),
    (dt.date(2024, 3, 8), "DATE"),
    (dt.datetime(2024, 3, 8, 23, 59, 59, 999_999, tzinfo=dt.UTC), "TIMESTAMP WITH TIME ZONE"),
    (["s3://b/k'1.parquet", "s3://b/k2.parquet"], "VARCHAR[]"),
])
def test_duckdb_literals_read_back_as_exactly_the_value(value, sql_type):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    literal = duckdb_literal(value)
    got, kind = con.execute(f"SELECT {literal}, typeof({literal})").fetchone()
    assert got == value and kind == sql_type


def test_duckdb_literals_refuse_what_they_cannot_state_exactly():
    with pytest.raises(ValueError, match="naive datetime"):
        duckdb_literal(dt.datetime(2024, 3, 8))
    with pytest.raises(TypeError, match="no DuckDB literal for a float"):
        duckdb_literal(1.5)


def test_missing_connections_are_named(monkeypatch, airflow_db):
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook

    with pytest.raises(ConfigurationError, match="ClickHouse connection 'nope' is not defined"):
        ClickHouseHook("nope").query_rows("SELECT 1")
    with pytest.raises(ConfigurationError, match="DuckLake connection 'nope' is not defined"):
        DuckLakeHook("nope").settings()
