"""What Airflow's metadata DB says about each day of a team's table: the state of its latest run.

A run is mapped to the UTC day it moved the way its tasks resolve it: the ``partition_key`` in its conf,
else its data interval's start (scheduled, catch-up and backfill runs), else the day before it was
triggered (a manual run without a logical date). Full exports (persons) move no single day and are left out.
Only the latest run of a day counts: a day that failed and then succeeded is done. Dry runs and export-only
runs load nothing, so they are left out too.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_KEY = re.compile(r"^\d+_(\d{4}-\d{2}-\d{2})$")
RUNNING_STATES = ("queued", "running")


@dataclass
class DayStates:
    """Days of one DAG by the state of their latest run, and the latest successful run."""

    succeeded: set[dt.date] = field(default_factory=set)
    failed: set[dt.date] = field(default_factory=set)
    running: set[dt.date] = field(default_factory=set)
    last_success: dt.datetime | None = None
    last_success_day: dt.date | None = None


def _on(conf: dict[str, Any], option: str) -> bool:
    return str(conf.get(option, "")).strip().lower() in ("true", "1", "yes")


def run_day(conf: dict[str, Any] | None, data_interval_start: dt.datetime | None, run_after: dt.datetime | None) -> dt.date | None:
    """The UTC day one run loads into the lake; None for runs that load no single day: a full export, a dry
    run, an export-only run (they neither cover a day nor change whether it failed), or an unreadable key."""
    conf = conf or {}
    if any(_on(conf, option) for option in ("full_export", "dry_run", "skip_ducklake_registration")):
        return None
    key = conf.get("partition_key")
    if key:
        match = _KEY.match(str(key).strip())
        if not match:
            return None
        try:
            return dt.date.fromisoformat(match.group(1))
        except ValueError:
            return None
    if data_interval_start is not None:
        return data_interval_start.astimezone(dt.UTC).date()
    if run_after is not None:
        return (run_after - dt.timedelta(days=1)).astimezone(dt.UTC).date()
    return None


def day_states(dag_ids: Iterable[str]) -> dict[str, DayStates]:
    """Per DAG id, its days by the state of their latest run (DAGs without runs are absent)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_ids = list(dag_ids)
    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id.in_(dag_ids))).all()
        rows = [(r.dag_id, getattr(r.state, "value", r.state), r.conf, r.data_interval_start, r.run_after, r.end_date, r.id) for r in runs]
    latest: dict[tuple[str, dt.date], tuple[Any, ...]] = {}
    out: dict[str, DayStates] = {}
    for dag_id, state, conf, start, run_after, end_date, run_pk in rows:
        day = run_day(conf, start, run_after)
        if day is None:
            continue
        order = (run_after or dt.datetime.min.replace(tzinfo=dt.UTC), run_pk)
        if (dag_id, day) not in latest or latest[(dag_id, day)][0] < order:
            latest[(dag_id, day)] = (order, str(state))
        states = out.setdefault(dag_id, DayStates())
        if str(state) == "success" and end_date and (states.last_success is None or end_date > states.last_success):
            states.last_success, states.last_success_day = end_date, day
    for (dag_id, day), (_, state) in latest.items():
        states = out[dag_id]
        if state == "success":
            states.succeeded.add(day)
        elif state == "failed":
            states.failed.add(day)
        elif state in RUNNING_STATES:
            states.running.add(day)
    return out
