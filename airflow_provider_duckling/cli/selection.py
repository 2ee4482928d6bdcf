"""Which ducklings a command works on, and from which day each table's history is expected.

Read-only: the registry and the remembered start dates are read exactly as the DAG file reads them, but
nothing is written (the DAG file's last-good copy is left to the DAG processor).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from airflow_provider_duckling.cli.errors import UsageError
from airflow_provider_duckling.domain.partitions import validate_team_id
from airflow_provider_duckling.registry.catalog import Duckling, load_registry
from airflow_provider_duckling.registry.state import StartDates, load_start_dates


def registry_file(args: argparse.Namespace) -> Path:
    """``--registry`` or the configured ``[duckling] registry_path``."""
    if getattr(args, "registry", None):
        return Path(args.registry)
    from airflow_provider_duckling.registry import settings

    return settings.registry_path()


def state_file(args: argparse.Namespace) -> Path:
    """The remembered start dates beside ``--registry``, or the configured ``[duckling] state_path``."""
    if getattr(args, "registry", None):
        return Path(args.registry).with_name("duckling_state.json")
    from airflow_provider_duckling.registry import settings

    return settings.state_path()


def discovered_dates(args: argparse.Namespace) -> StartDates:
    """Start dates found by ``duckling_discover_start_dates`` (none if the file is missing)."""
    return load_start_dates(state_file(args))


def select(args: argparse.Namespace, teams: Iterable[object] | None) -> list[Duckling]:
    """The registry entries of ``teams`` (all when none given), in team order; an unknown team is a usage error."""
    path = registry_file(args)
    ducklings = load_registry(path)
    wanted = [validate_team_id(t) for t in teams or ()]
    missing = [t for t in wanted if t not in ducklings]
    if missing:
        raise UsageError(f"team {', '.join(map(str, missing))} has no duckling in {path.name} (see: duckling catalog list)")
    return [ducklings[t] for t in sorted(wanted or ducklings)]


def start_for(duckling: Duckling, table: str, discovered: StartDates) -> dt.date | None:
    """The first day the team's DAG back-fills: the registry's start date, else the discovered one, never
    before ``[duckling] start_date_floor`` (the same rule as the DAG file)."""
    from airflow_provider_duckling.registry import settings

    start = duckling.start_date or discovered.get(table, {}).get(duckling.team_id)
    return max(start, settings.start_date_floor()) if start else None


def yesterday() -> dt.date:
    """The last closed UTC day: the newest day any DAG can have run."""
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def start_label(duckling: Duckling, discovered: StartDates) -> str:
    """The registry's start date, else the discovered ones per table, else that discovery is pending."""
    if duckling.start_date:
        return duckling.start_date.isoformat()
    found = {table: days[duckling.team_id] for table, days in discovered.items() if duckling.team_id in days}
    if not found:
        return "pending discovery"
    return ", ".join(f"{table} {day} (discovered)" for table, day in sorted(found.items()))
