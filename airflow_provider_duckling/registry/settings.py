"""The provider's own settings, read from Airflow's config section ``[duckling]`` (or the matching
``AIRFLOW__DUCKLING__*`` environment variables). Reading them touches no network."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from airflow_provider_duckling.common.errors import ConfigurationError, quoted

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


EXPORT_IDENTITIES = ("assumed_role", "clickhouse")


def export_identity() -> str:
    """``[duckling] export_identity``: how ClickHouse authenticates its writes to a duckling's bucket
    (a registry entry's ``export_identity`` overrides it).

    ``assumed_role`` (default): the worker assumes the duckling's role and hands ClickHouse the session's
    credentials as bound parameters in the request body. ``clickhouse``: ClickHouse writes with its own
    identity (its environment, instance profile or IRSA role, or the named collection of
    ``clickhouse_s3_collection``), which each duckling's bucket policy grants; no credential crosses from the
    worker. The worker assumes the duckling's role for registration either way.
    """
    value = _get("export_identity", "assumed_role") or "assumed_role"
    if value not in EXPORT_IDENTITIES:
        raise ConfigurationError(f"[duckling] export_identity must be {' or '.join(EXPORT_IDENTITIES)}, got {quoted(value)}")
    return value


def clickhouse_s3_collection() -> str | None:
    """``[duckling] clickhouse_s3_collection``: with ``export_identity = clickhouse``, a ClickHouse named
    collection holding ClickHouse's own S3 credentials (``s3(collection, url=…)``); unset, ClickHouse uses its
    server configuration (environment, instance profile, ``<s3>`` endpoint settings)."""
    value = _get("clickhouse_s3_collection", "") or ""
    if not value:
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value, flags=re.ASCII):
        raise ConfigurationError(
            f"[duckling] clickhouse_s3_collection must be a named collection's name (letters, digits, _), got {quoted(value)}"
        )
    return value


def rows_per_file() -> int:
    """``[duckling] rows_per_file``: target rows of one exported Parquet file (default 5,000,000).

    A larger partition is written as several files of about this many rows by one export statement, and
    registered in one transaction.
    """
    return _int("rows_per_file", 5_000_000, 1_000, 1_000_000_000)


def history_batch_months() -> int:
    """``[duckling] history_batch_months``: calendar months of events history one catch-up run moves
    (default 3, a calendar quarter; 1, 2, 3, 4, 6 or 12).

    Airflow's cost per run, not ClickHouse, sets the pace of a back-fill: P11 measured a 1,100-day team at
    5.4× the bare engine with one month per run (41 runs) on 2 cores, and the quarter keeps it under 5× with
    a third of the runs. A team of more than about 20M events a day may want 1: one run then exports a month,
    within the export's 3-hour timeout.
    """
    from airflow_provider_duckling.domain.history import MONTHS

    value = _int("history_batch_months", 3, 1, 12)
    if value not in MONTHS:
        raise ConfigurationError(f"[duckling] history_batch_months must divide the year: one of {MONTHS}")
    return value


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


def freshness_max_lag_days() -> int:
    """``[duckling] freshness_max_lag_days``: the freshness check fails when a team's table is more than this
    many days behind the last closed day (default 2)."""
    return _int("freshness_max_lag_days", 2, 0, 3650)


def onboarding_grace() -> dt.timedelta:
    """``[duckling] onboarding_grace_hours``: a duckling's tables are measured but not alerted on by the
    freshness check until this long after discovery first saw it (default 6; 0 turns the grace off).

    A new duckling holds nothing until its first top-up ran: up to 15 min to the discovery pass that sees
    it (and finds its start), a re-parse, up to 15 min to the top-up pass, then the exports themselves,
    queued in the shared export pool behind every other new team's and retried up to ``task_retries``
    times (2 + 4 + 8 min at the default delay), and a day that ends meanwhile waits ``settle_minutes``
    (2 h) before its top-up. That is about 3 hours with the default settings; 6 gives a deployment whose
    teams are all new at once twice that, and delays a new duckling's first real alert by at most 6 hours,
    small beside the 2 days of lag (``freshness_max_lag_days``) the check allows any team.
    """
    return dt.timedelta(hours=_int("onboarding_grace_hours", 6, 0, 24 * 366))


def reconcile_days() -> int:
    """``[duckling] reconcile_days``: the reconciliation compares this many of each team's last closed days,
    ClickHouse against the lake (default 3)."""
    return _int("reconcile_days", 3, 1, 366)


def history_check_schedule() -> str:
    """``[duckling] history_check_schedule``: the cron (UTC) of the whole-history check, which compares every
    day of each team's events history, ClickHouse against the lake, and re-moves the days that differ
    (default ``30 4 * * 0``: weekly, Sunday 04:30)."""
    value = (_get("history_check_schedule", "30 4 * * 0") or "30 4 * * 0").strip()
    try:
        from croniter import croniter

        valid = len(value) <= 100 and croniter.is_valid(value)
    except ImportError:  # pragma: no cover - Airflow installs croniter
        valid = bool(re.fullmatch(r"@[a-z]+|(\S+\s+){4}\S+", value, flags=re.ASCII))
    if not valid:
        raise ConfigurationError(f"[duckling] history_check_schedule must be a cron expression, got {quoted(value)}")
    return value


def history_check_max_days() -> int:
    """``[duckling] history_check_max_days``: at most this many differing days of one team are re-moved by
    one pass of the whole-history check, newest first; the rest wait for the next pass (default 31)."""
    return _int("history_check_max_days", 31, 1, 3660)


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", re.ASCII)


def failure_notifier_path() -> str | None:
    """``[duckling] failure_notifier``: dotted path of an Airflow notifier class (a ``BaseNotifier``
    subclass) set as the failure callback of the project's tasks; empty (the default) for none."""
    value = (_get("failure_notifier", "") or "").strip()
    if not value:
        return None
    if not _DOTTED.fullmatch(value) or len(value) > 300:
        raise ConfigurationError(f"[duckling] failure_notifier must be a dotted path like package.module.Class, got {quoted(value)}")
    return value


def failure_notifier_kwargs() -> dict[str, object]:
    """``[duckling] failure_notifier_kwargs``: the notifier's keyword arguments, one JSON object (default ``{}``)."""
    import json

    raw = (_get("failure_notifier_kwargs", "") or "").strip() or "{}"
    try:
        value = json.loads(raw) if len(raw) <= 65536 else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigurationError(f"[duckling] failure_notifier_kwargs must be one JSON object, got {quoted(raw)}")
    return value


def rediscovery_days() -> int:
    """``[duckling] rediscovery_days``: every this many days, discovery re-checks where each known team's
    events history starts, so that older data loaded later is back-filled (default 7; 0 turns it off)."""
    return _int("rediscovery_days", 7, 0, 3650)


_SIZE = re.compile(r"([0-9]{1,15})(?: ?(KB|MB|GB|TB|KiB|MiB|GiB|TiB))?", re.ASCII | re.IGNORECASE)
_SIZE_UNITS = {"": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def export_max_threads() -> int | None:
    """``[duckling] export_max_threads``: ClickHouse's ``max_threads`` for every export statement (default
    empty: the server's own). A run's ``clickhouse_settings`` overrides it."""
    raw = (_get("export_max_threads", "") or "").strip()
    if not raw:
        return None
    value = _whole_number("export_max_threads", raw, "a whole number of threads")
    if not 1 <= value <= 1024:
        raise ConfigurationError("[duckling] export_max_threads must be between 1 and 1024")
    return value


def export_max_memory_usage() -> int | None:
    """``[duckling] export_max_memory_usage``: ClickHouse's ``max_memory_usage`` (bytes) for every export
    statement, as bytes or with a unit (``8GiB``, ``500MB``); default empty: the server's own. A run's
    ``clickhouse_settings`` overrides it."""
    raw = (_get("export_max_memory_usage", "") or "").strip()
    if not raw:
        return None
    match = _SIZE.fullmatch(raw)
    if not match:
        raise ConfigurationError(f"[duckling] export_max_memory_usage must be bytes or a size like 8GiB, got {quoted(raw)}")
    value = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if not 1 << 20 <= value <= 1 << 50:
        raise ConfigurationError("[duckling] export_max_memory_usage must be between 1MiB and 1PiB")
    return value
