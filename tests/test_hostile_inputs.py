"""Hostile input to the registry, the state file, partition keys, settings and CLI options (issue 13, point 4):
each malformed value is refused with one short line naming the field, quoting at most a bounded prefix, and
no other exception escapes. The DAG file keeps its last good copy; the CLI exits 2 and writes nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from airflow_provider_duckling.cli.main import main
from airflow_provider_duckling.common.errors import (
    QUOTE_LIMIT,
    ConfigurationError,
    PartitionError,
    RegistryError,
    quoted,
)
from airflow_provider_duckling.domain.partitions import Partition, parse_day, validate_team_id
from airflow_provider_duckling.registry import settings, state
from airflow_provider_duckling.registry.catalog import (
    MAX_REGISTRY_BYTES,
    Duckling,
    load_registry,
    parse_registry,
    write_registry,
)
from tests.test_validation import GOOD  # one valid entry, shared with the validation tests

MAX_MESSAGE = 300


def short(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) <= MAX_MESSAGE, text[:500]
    return text


def registry_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "ducklings.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def refused(path: Path, match: str) -> str:
    with pytest.raises(RegistryError, match=match) as info:
        load_registry(path)
    return short(info.value)


def good_yaml(**changes: object) -> str:
    return yaml.safe_dump({"ducklings": [{**GOOD, **changes}]}, sort_keys=False)


# --- whitespace and control characters ----------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("bucket", "acme-duckling\n"), ("bucket", " acme-duckling"), ("bucket_region", "us-east-1\n"),
    ("db_host", "catalog.example.internal\n"), ("db_host", "catalog.example\x00.internal"), ("db_host", "fe80::1%eth0\n"),
    ("db_name", "ducklake\n"), ("db_name", "duck\tlake"), ("cross_account_role_arn", GOOD["cross_account_role_arn"] + "\n"),
    ("cross_account_external_id", "posthog-12345\n"), ("cross_account_external_id", "post hog"),
    ("catalog_conn_id", "ducklake_default\n"), ("catalog_conn_id", "duck\x1blake"), ("start_date", "2024-01-01\n"),
    ("team_id", "12345\n"), ("team_id", " 12345"),
])
def test_trailing_or_embedded_whitespace_and_control_characters_are_refused(field, value):
    with pytest.raises(RegistryError, match=field.replace("team_id", "team id")) as info:
        Duckling.from_dict({**GOOD, field: value})
    short(info.value)


def test_a_trailing_newline_is_refused_by_catalog_add_and_nothing_is_written(tmp_path, capsys):
    path = tmp_path / "ducklings.yaml"
    argv = ["catalog", "add", "--team-id", "61", "--bucket", "cli-acme-duckling\n", "--region", "us-east-1",
            "--db-host", "acme-catalog.internal", "--db-name", "acme_lake",
            "--role-arn", "arn:aws:iam::111122223333:role/duckling-writer", "--external-id", "acme-ext-id-Secret0061",
            "--registry", str(path)]
    assert main(argv) == 2
    assert "invalid bucket" in capsys.readouterr().err and not path.exists()


@pytest.mark.parametrize("key", ["12345_2024-01-15\n", " 12345_2024-01-15", "12345_2024-01-15 ", "12345 _2024-01-15",
                                 "12345_2024-01-15\x00", "\t12345_2024-01-15"])
def test_partition_keys_with_whitespace_or_control_characters_are_refused(key):
    with pytest.raises(PartitionError, match="invalid partition key") as info:
        Partition.parse(key)
    short(info.value)


# --- non-ASCII digits and lookalikes ------------------------------------------------------------------------

@pytest.mark.parametrize("team", ["７", "١٢٣", "1\u200b2", "1_000", "+5", "0x10", "1e3"])
def test_non_ascii_digits_and_lookalikes_are_not_team_ids(team):
    with pytest.raises(PartitionError, match="invalid team id"):
        validate_team_id(team)


@pytest.mark.parametrize("key", ["７_2024-01-15", "12345_２024-01-15", "12345_2024‐01‐15", "12345＿2024-01-15"])
def test_non_ascii_digits_in_partition_keys_are_refused(key):
    with pytest.raises(PartitionError, match="invalid partition key"):
        Partition.parse(key)
    with pytest.raises(PartitionError, match="invalid day"):
        parse_day("２０２４-01-15")


@pytest.mark.parametrize("field, value", [
    ("bucket_region", "us-east-１"), ("cross_account_role_arn", "arn:aws:iam::１１１122223333:role/x"),
    ("start_date", "２024-01-01"), ("db_host", "catalоg.example.internal"),  # a Cyrillic o
])
def test_non_ascii_digits_and_lookalikes_in_registry_fields_are_refused(field, value):
    with pytest.raises(RegistryError, match=field):
        Duckling.from_dict({**GOOD, field: value})


@pytest.mark.parametrize("raw", ["３", " 3", "3 ", "1_0", "3\n", "1e3"])
def test_settings_refuse_non_ascii_digits_and_whitespace(monkeypatch, raw):
    monkeypatch.setenv("AIRFLOW__DUCKLING__TASK_RETRIES", raw)
    with pytest.raises(ConfigurationError, match="task_retries must be a whole number") as info:
        settings.task_retries()
    short(info.value)


@pytest.mark.parametrize("key, raw, call", [
    ("start_date_floor", "2020-01-01\n", settings.start_date_floor), ("start_date_floor", "20200101", settings.start_date_floor),
    ("export_pool", "duckling_exports\n", settings.export_pool), ("maintenance_memory_limit", "２GB", settings.maintenance_memory_limit),
    ("settle_minutes", "١٢٠", settings.settle_delay),
])
def test_other_settings_refuse_malformed_values(monkeypatch, key, raw, call):
    monkeypatch.setenv(f"AIRFLOW__DUCKLING__{key.upper()}", raw)
    with pytest.raises(ConfigurationError, match=key) as info:
        call()
    short(info.value)


# --- duplicate keys, several documents or top-level lists ---------------------------------------------------

def test_a_duplicate_key_in_an_entry_is_refused(tmp_path):
    text = good_yaml().replace("  bucket: acme-duckling\n", "  bucket: acme-duckling\n  bucket: other-duckling\n")
    assert "duplicate key 'bucket'" in refused(registry_file(tmp_path, text), "duplicate key")


def test_a_second_top_level_list_is_refused_not_an_empty_registry(tmp_path):
    assert "duplicate key 'ducklings'" in refused(registry_file(tmp_path, good_yaml() + "ducklings: []\n"), "duplicate")


def test_a_duplicate_key_in_json_form_is_refused_too(tmp_path):
    text = '{"ducklings": [], "ducklings": []}'
    refused(registry_file(tmp_path, text), "duplicate key")


def test_several_documents_are_refused(tmp_path):
    refused(registry_file(tmp_path, good_yaml() + "---\nducklings: []\n"), "single document")


def test_a_duplicate_key_in_the_state_file_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"start_dates": {"events": {"1": "2024-01-01", "1": "2023-01-01"}}}')
    with pytest.raises(RegistryError, match="duplicate key"):
        state.load_start_dates(path)


# --- undecodable bytes, huge numbers, deep nesting, oversized files, aliases ---------------------------------

def test_undecodable_bytes_are_reported_not_raised(tmp_path):
    assert "not UTF-8 (byte 11)" in refused(registry_file(tmp_path, b"ducklings: \xff\xfe[]"), "not UTF-8")
    path = tmp_path / "state.json"
    path.write_bytes(b'{"start_dates": "\xc3\x28"}')
    with pytest.raises(RegistryError, match="not UTF-8"):
        state.load_start_dates(path)


def test_huge_numbers_are_refused_before_conversion(tmp_path):
    refused(registry_file(tmp_path, good_yaml().replace("team_id: 12345", "team_id: " + "9" * 5000)), "integer too long")
    path = tmp_path / "state.json"
    path.write_text('{"start_dates": {"events": {"' + "9" * 5000 + '": "2024-01-01"}}}')
    with pytest.raises(RegistryError, match="invalid team id") as info:
        state.load_start_dates(path)
    short(info.value)
    path.write_text('{"start_dates": ' + "9" * 5000 + "}")
    with pytest.raises(RegistryError, match="number too long"):
        state.load_start_dates(path)
    with pytest.raises(PartitionError, match="an integer of") as info:
        validate_team_id(10**5000)
    short(info.value)
    with pytest.raises(PartitionError, match="invalid partition key"):
        Partition.parse("9" * 5000 + "_2024-01-15")


def test_deep_nesting_is_reported_not_raised(tmp_path):
    refused(registry_file(tmp_path, "ducklings: " + "[" * 100_000 + "]" * 100_000), "nesting")
    path = tmp_path / "state.json"
    path.write_text('{"start_dates": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(RegistryError, match="nested too deeply"):
        state.load_start_dates(path)


def test_a_registry_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = registry_file(tmp_path, good_yaml())
    with path.open("r+b") as handle:
        handle.truncate(MAX_REGISTRY_BYTES + 1)  # sparse: nothing to parse would take seconds
    monkeypatch.setattr(yaml, "compose", lambda *a, **k: pytest.fail("parsed"))
    assert "16 MiB limit" in refused(path, "larger than the 16 MiB limit")


def test_aliases_are_refused_so_an_alias_bomb_cannot_expand(tmp_path):
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)) + "ducklings: []\n"
    refused(registry_file(tmp_path, bomb), "aliases")
    refused(registry_file(tmp_path, "x: &x {k: 1}\nducklings: []\ny: {<<: *x}\n"), "aliases")
    refused(registry_file(tmp_path, "ducklings: &l [*l]\n"), "aliases")


# --- identities compared after normalisation ----------------------------------------------------------------

@pytest.mark.parametrize("first, second", [
    ({"db_host": "Catalog.Example.Internal"}, {"db_host": "catalog.example.internal"}),
    ({"db_port": 5432}, {}),
    ({"db_host": "2001:db8::1"}, {"db_host": "2001:DB8:0:0:0:0:0:1"}),
])
def test_two_entries_share_a_catalog_after_normalisation(first, second):
    one = {**GOOD, **first}
    two = {**GOOD, "team_id": 2, "bucket": "other-duckling", **second}
    with pytest.raises(RegistryError, match="every duckling needs its own catalog") as info:
        parse_registry({"ducklings": [one, two]})
    short(info.value)
    parse_registry({"ducklings": [one, {**two, "db_port": 6432}]})  # another port is another catalog


# --- numbers out of range or not finite ---------------------------------------------------------------------

@pytest.mark.parametrize("port", [0, 65536, -1, float("nan"), float("inf"), 5432.0, True, "5432"])
def test_db_port_out_of_range_or_not_an_integer(port):
    with pytest.raises(RegistryError, match="invalid db_port"):
        Duckling.from_dict({**GOOD, "db_port": port})


@pytest.mark.parametrize("argv, option", [
    (["setup", "--export-slots", "-1"], "--export-slots"), (["setup", "--export-slots", "0"], "--export-slots"),
    (["setup", "--export-slots", "10001"], "--export-slots"), (["setup", "--export-slots", "８"], "--export-slots"),
    (["run", "1_2024-01-15", "--wait", "--timeout", "nan"], "--timeout"),
    (["run", "1_2024-01-15", "--wait", "--timeout", "inf"], "--timeout"),
    (["run", "1_2024-01-15", "--wait", "--timeout", "-1"], "--timeout"),
    (["run", "1_2024-01-15", "--wait", "--poll-interval", "0"], "--poll-interval"),
    (["catalog", "validate", "--parallel", "0"], "--parallel"),
    (["catalog", "add", "--team-id", "1", "--bucket", "b-1", "--region", "us-east-1", "--db-host", "h", "--db-name", "d",
      "--role-arn", "arn:aws:iam::111122223333:role/x", "--external-id", "xx", "--db-port", "70000"], "--db-port"),
])
def test_cli_numbers_are_range_checked_and_exit_2(capsys, argv, option):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and len(err.strip().splitlines()[-1]) <= MAX_MESSAGE


@pytest.mark.parametrize("raw", ["-1", "21", "99999999999999999999999"])
def test_settings_numbers_out_of_range(monkeypatch, raw):
    monkeypatch.setenv("AIRFLOW__DUCKLING__TASK_RETRIES", raw)
    with pytest.raises(ConfigurationError, match="task_retries"):
        settings.task_retries()


# --- bounded messages, and the DAG file's fallback ----------------------------------------------------------

def test_messages_quote_only_a_bounded_prefix():
    with pytest.raises(PartitionError) as info:
        Partition.parse("x" * 100_000)
    assert len(short(info.value)) < 200
    assert quoted("a" * 1000).endswith("…") and len(quoted("a" * 1000)) <= QUOTE_LIMIT + 3
    assert quoted("line\nbreak") == "'line\\nbreak'"
    with pytest.raises(RegistryError) as info:
        Duckling.from_dict({**GOOD, "start_date": "y" * 100_000})
    short(info.value)
    with pytest.raises(RegistryError) as info:
        Duckling.from_dict({**GOOD, "k" * 100_000: 1})
    short(info.value)


def test_the_dag_file_keeps_its_last_good_copy_on_hostile_files(tmp_path):
    registry, dates, last_good = tmp_path / "r.yaml", tmp_path / "dates.json", tmp_path / "last_good.json"
    write_registry([Duckling.from_dict(GOOD)], registry)
    dates.write_text(json.dumps({"start_dates": {"events": {"12345": "2024-01-01"}}}))
    first = state.load_dag_inputs(registry, dates, last_good)
    assert list(first.ducklings) == [12345] and not first.problems

    hostile_registries = [b"ducklings: \xff", good_yaml().encode() + b"ducklings: []\n", b"ducklings: " + b"[" * 50_000,
                          good_yaml().replace("team_id: 12345", "team_id: " + "9" * 5000).encode()]
    for text in hostile_registries:
        registry.write_bytes(text)
        got = state.load_dag_inputs(registry, dates, last_good)
        assert list(got.ducklings) == [12345] and len(got.problems) == 1, text[:40]
        short(RegistryError(got.problems[0]))
    write_registry([Duckling.from_dict(GOOD)], registry)

    for text in ('{"start_dates": ' + "[" * 100_000 + "}", b'{"start_dates": "\xff"}', '{"start_dates": NaN}',
                 '{"start_dates": {"events": {"１": "2024-01-01"}}}'):
        dates.write_bytes(text if isinstance(text, bytes) else text.encode())
        got = state.load_dag_inputs(registry, dates, last_good)
        assert got.start_dates == {"events": {12345: dt.date(2024, 1, 1)}} and len(got.problems) == 1

    last_good.write_text("[" * 100_000)  # a broken last good copy is ignored, never raised
    registry.write_bytes(b"\xff")
    assert state.load_dag_inputs(registry, dates, last_good).ducklings == {}
