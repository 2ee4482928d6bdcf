"""The provider's own settings, read from Airflow's config section ``[duckling]`` (or the matching
``AIRFLOW__DUCKLING__*`` environment variables). Reading them touches no network."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from airflow_provider_duckling.errors import ConfigurationError, quoted

_WHOLE = re.compile(r"-?[0-9]{1,12}", re.ASCII)  # ASCII digits, no spaces, no "_", at most 12 of them
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _whole_number(key: str, raw: str, what: str = "a whole number") -> int:
    if not _WHOLE.fullmatch(raw):
        raise ConfigurationError(f"[duckling] {key} must be {what}, got {quoted(raw)}")
    return int(raw)


def _get(key: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"AIRFLOW__DUCKLING__{key.upper()}")
    if value is not None:
        return value
    try:
        from airflow.configuration import conf

        return conf.get("duckling", key, fallback=default)
    except Exception:  # pragma: no cover - outside an Airflow installation
        return default


def registry_path() -> Path:
    """``[duckling] registry_path``: the registry file (default ``ducklings.yaml`` in the DAGs folder)."""
    configured = _get("registry_path")
    if configured:
        return Path(configured)
    try:
        from airflow.configuration import conf

        return Path(conf.get("core", "dags_folder")) / "ducklings.yaml"
    except Exception:  # pragma: no cover
        return Path("ducklings.yaml")


def state_path() -> Path:
    """``[duckling] state_path``: where discovered start dates are remembered (beside the registry)."""
    configured = _get("state_path")
    return Path(configured) if configured else registry_path().with_name("duckling_state.json")


def last_good_path() -> Path:
    """``[duckling] last_good_path``: the last registry + state that loaded, used when either breaks."""
    configured = _get("last_good_path")
    if configured:
        return Path(configured)
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "duckling_last_good.json"


def settle_delay() -> dt.timedelta:
    """``[duckling] settle_minutes``: how long after a UTC day ends its top-up waits for late events."""
    raw = _get("settle_minutes", "120") or "120"
    minutes = _whole_number("settle_minutes", raw, "a whole number of minutes")
    if not 0 <= minutes <= 7 * 24 * 60:
        raise ConfigurationError("[duckling] settle_minutes must be between 0 and 10080 (a week)")
    return dt.timedelta(minutes=minutes)


def start_date_floor() -> dt.date:
    """``[duckling] start_date_floor``: no back-fill starts before this day (default 2015-01-01)."""
    raw = _get("start_date_floor", "2015-01-01") or "2015-01-01"
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError(raw)
        floor = dt.date.fromisoformat(raw)
    except ValueError:
        raise ConfigurationError(f"[duckling] start_date_floor must be YYYY-MM-DD, got {quoted(raw)}") from None
    return max(floor, dt.date(1970, 1, 1))


def _int(key: str, default: int, low: int, high: int) -> int:
    raw = _get(key, str(default)) or str(default)
    value = _whole_number(key, raw)
    if not low <= value <= high:
        raise ConfigurationError(f"[duckling] {key} must be between {low} and {high}")
    return value


def task_retries() -> int:
    """``[duckling] task_retries``: retries of a failed export/register before the run fails (default 3)."""
    return _int("task_retries", 3, 0, 20)


def retry_delay() -> dt.timedelta:
    """``[duckling] retry_delay_seconds``: first retry delay, doubled each time up to an hour (default 120)."""
    return dt.timedelta(seconds=_int("retry_delay_seconds", 120, 0, 3600))


def retry_lookback_days() -> int:
    """``[duckling] retry_lookback_days``: how far back the hourly later pass looks for failed days (default 7)."""
    return _int("retry_lookback_days", 7, 1, 366)


def role_session_seconds() -> int:
    """``[duckling] role_session_seconds``: how long an assumed duckling role's credentials last (default 3600).

    Keep it above the longest export (the export task's execution timeout); the role's MaxSessionDuration
    must allow it (up to 12 hours).
    """
    return _int("role_session_seconds", 3600, 900, 43200)


def rows_per_file() -> int:
    """``[duckling] rows_per_file``: target rows of one exported Parquet file (default 5,000,000).

    A larger partition is written as several files of about this many rows by one export statement, and
    registered in one transaction.
    """
    return _int("rows_per_file", 5_000_000, 1_000, 1_000_000_000)


def topup_days() -> int:
    """``[duckling] topup_days``: runs of the last this many days are top-ups, scheduled ahead of history (default 3)."""
    return _int("topup_days", 3, 0, 366)


def export_pool() -> str:
    """``[duckling] export_pool``: the Airflow pool that bounds concurrent exports (default ``duckling_exports``).

    Create it once with ``duckling setup`` (or ``airflow pools set duckling_exports 8 ...``); an export in a
    pool that does not exist is never scheduled.
    """
    name = _get("export_pool", "duckling_exports") or "duckling_exports"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,256}", name, flags=re.ASCII):
        raise ConfigurationError(f"[duckling] export_pool must be a pool name (letters, digits, _ . -), got {quoted(name)}")
    return name


def export_pool_slots() -> int:
    """``[duckling] export_pool_slots``: the size ``duckling setup`` gives the export pool (default 8):
    at most this many exports hit ClickHouse at once, across all teams."""
    return _int("export_pool_slots", 8, 1, 10_000)


def snapshot_retention_days() -> int:
    """``[duckling] snapshot_retention_days``: maintenance expires snapshots older than this (default 7)."""
    return _int("snapshot_retention_days", 7, 0, 3650)


def orphan_retention_days() -> int:
    """``[duckling] orphan_retention_days``: an export never registered is deleted once this old (default 7,
    the later pass's look-back: a late retry may still register it)."""
    return _int("orphan_retention_days", 7, 1, 3650)


def maintenance_memory_limit() -> str:
    """``[duckling] maintenance_memory_limit``: DuckDB memory limit of a maintenance pass (default ``2GB``)."""
    value = _get("maintenance_memory_limit", "2GB") or "2GB"
    if not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,3})? ?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, flags=re.IGNORECASE | re.ASCII):
        raise ConfigurationError(f"[duckling] maintenance_memory_limit must look like 2GB or 512MB, got {quoted(value)}")
    return value
