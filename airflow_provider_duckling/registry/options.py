"""The original system's ``DucklingBackfillConfig``: seven options, plus which partition to move.

They reach the operators as DAG Params (the trigger form shows each with its description) rendered as
native values; strings such as ``"false"`` are accepted too, so the operators behave the same when used
outside the generated DAGs with plain string templating.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_duckling.common.errors import ConfigurationError, PartitionError
from airflow_provider_duckling.domain.partitions import (
    FullExport,
    Partition,
    Scope,
    days_scope,
    parse_day,
    parse_key,
    validate_team_id,
)

#: name → (default, description) — the seed's meaning, in the trigger form's words.
OPTION_DOCS: dict[str, tuple[Any, str]] = {
    "clickhouse_settings": ({}, "ClickHouse settings for the export query, merged over the defaults "
                                "(e.g. {\"max_execution_time\": 7200}). Settings that would change which rows are "
                                "exported (limit, offset, additional filters, an overflow mode other than throw, "
                                "final) are refused. max_threads and max_memory_usage here override [duckling] "
                                "export_max_threads / export_max_memory_usage; log_comment is the provider's."),
    "skip_ducklake_registration": (False, "Export to S3 only: write the Parquet file(s) but leave the duckling untouched."),
    "skip_schema_validation": (False, "Skip the pre-flight check that the lake table can accept the export's columns and types."),
    "cleanup_existing_partition_data": (True, "Delete the partition's existing rows in the same transaction that registers "
                                              "the new file. Off: rows accumulate (re-runs add duplicates)."),
    "create_tables_if_missing": (True, "Create the duckling's posthog tables (and the persons view) when missing. "
                                       "Off: a missing table is an error, before anything is exported."),
    "delete_tables": (False, "DANGER: drop and recreate this table in the duckling (all its rows, every day) before "
                             "registering this run's file. Use to reset a duckling, then re-backfill."),
    "dry_run": (False, "Preview: log exactly what would be exported, deleted and registered; write nothing anywhere."),
}


def as_bool(name: str, value: Any) -> bool:
    """Accept real booleans and their usual string forms; refuse anything else by name."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if value is None:
        raise ConfigurationError(f"{name} must be true or false, got nothing")
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


def parse_clickhouse_settings(value: Any) -> dict[str, Any]:
    """The ``clickhouse_settings`` option as a mapping (a JSON string is accepted, empty means none)."""
    if value is None:
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ConfigurationError("clickhouse_settings must be a JSON object of setting → value") from None
    if not isinstance(value, dict):
        raise ConfigurationError("clickhouse_settings must be a mapping of setting → value")
    return value


def resolve_scope(
    team_id: Any, day: Any, partition_key: str | None = None, full_export: Any = False, last_day: Any = None,
) -> Scope:
    """What this run moves: the partition key (a day or a range of days) if given (it must belong to
    ``team_id``), else ``day`` through ``last_day`` (a batch of history; one day when it is empty or the
    same); or the whole team for a full export."""
    team = validate_team_id(team_id)
    if as_bool("full_export", full_export or False):
        return FullExport(team)
    if partition_key:
        scope = parse_key(str(partition_key))
        if scope.team_id != team:
            raise PartitionError(f"partition {scope.key} belongs to team {scope.team_id}, not to this DAG's team {team}")
        return scope
    first = parse_day(day)
    last = parse_day(last_day) if last_day not in (None, "") else first
    return days_scope(team, first, last) if last != first else Partition(team, first)
