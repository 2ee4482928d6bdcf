"""What Airflow's metadata DB says about each day of a team's table: the state of its latest run.

A run is mapped to the UTC days it moved the way its tasks resolve them: the ``partition_key`` in its conf
(a day, or a range of days), else its data interval (scheduled, catch-up and backfill runs: one day, or a
batch of history), else the day before it was triggered (a manual run without a logical date). Full exports
(persons) move no single day and are left out.
Only the latest run of a day counts: a day that failed and then succeeded is done. Dry runs and export-only
runs load nothing, so they are left out too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

_KEY = re.compile(r"^\d+_(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?$")
MAX_RUN_DAYS = 366  # a run moves at most this many days (a range key's limit): a longer interval is not ours
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
    """The (first) UTC day one run loads into the lake; None for runs that load no single day: a full
    export, a dry run, an export-only run (they neither cover a day nor change whether it failed), or an
    unreadable key."""
    days = run_days(conf, data_interval_start, None, run_after)
    return days[0] if days else None


def _span(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first or (last - first).days >= MAX_RUN_DAYS:
        return [first]
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def run_days(conf: dict[str, Any] | None, data_interval_start: dt.datetime | None,
             data_interval_end: dt.datetime | None, run_after: dt.datetime | None) -> list[dt.date]:
    """Every UTC day one run loads into the lake (a batch of history: each of its days); empty for the runs
    :func:`run_day` leaves out."""
    conf = conf or {}
    if conf and any(_on(conf, option) for option in ("full_export", "dry_run", "skip_ducklake_registration")):
        return []
    key = conf.get("partition_key") if conf else None
    if key:
        match = _KEY.match(str(key).strip())
        if not match:
            return []
        try:
            first = dt.date.fromisoformat(match.group(1))
            return _span(first, dt.date.fromisoformat(match.group(2))) if match.group(2) else [first]
        except ValueError:
            return []
    if data_interval_start is not None:
        first = data_interval_start.astimezone(dt.UTC).date()
        if data_interval_end is None:
            return [first]
        return _span(first, (data_interval_end.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date())
    if run_after is not None:
        return [(run_after - dt.timedelta(days=1)).astimezone(dt.UTC).date()]
    return []


RunRow = tuple[str, Any, Any, dt.datetime | None, dt.datetime | None, dt.datetime | None, int, dt.datetime | None]
"""One DAG run as read from the metadata DB: dag_id, state, conf (a mapping, or its JSON text), data interval
start, run_after, end_date, id, data interval end."""
_EMPTY_CONF = (None, "", "{}", "null")


def _conf(raw: Any) -> dict[str, Any] | None:
    """A run's conf from the JSON text the query reads (decoded only when there is something in it)."""
    if isinstance(raw, dict):
        return raw or None
    if raw in _EMPTY_CONF:
        return None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


_IN_CHUNK = 10_000  # ids per IN list: one query up to 5,000 teams × 2 tables, within SQLite's 32,766 parameters


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start:start + _IN_CHUNK]


def day_states(dag_ids: Iterable[str]) -> dict[str, DayStates]:
    """Per DAG id, its days by the state of their latest run (DAGs without runs are absent).

    One query for all DAGs (up to 10,000 ids), selecting only the columns needed (no ORM objects) and
    streamed into the fold, so thousands of teams with years of runs are read in one pass."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import Text, cast, select

    wanted = sorted(set(dag_ids))
    with create_session() as session:

        def rows() -> Iterator[RunRow]:
            for chunk in _chunks(wanted):
                # conf as text: most runs (scheduled, catch-up) have none, and decoding it is most of the cost.
                yield from session.execute(  # type: ignore[misc]
                    select(DagRun.dag_id, DagRun.state, cast(DagRun.conf, Text), DagRun.data_interval_start,
                           DagRun.run_after, DagRun.end_date, DagRun.id, DagRun.data_interval_end)
                    .where(DagRun.dag_id.in_(chunk)),
                    execution_options={"yield_per": 20_000},  # streamed: memory holds the fold, not every run
                )

        return fold_runs(rows())


def fold_runs(rows: Iterable[RunRow]) -> dict[str, DayStates]:
    """Per DAG id, each day by the state of its latest run, and the latest successful run (pure)."""
    latest: dict[tuple[str, dt.date], tuple[Any, ...]] = {}
    out: dict[str, DayStates] = {}
    days: dict[tuple[Any, Any], list[dt.date]] = {}  # the same intervals recur across thousands of DAGs
    for dag_id, state, raw_conf, start, run_after, end_date, run_pk, *rest in rows:
        end = rest[0] if rest else None
        conf = _conf(raw_conf)
        if conf is None and start is not None:
            moved = days.get((start, end))
            if moved is None:
                moved = days[(start, end)] = run_days(None, start, end, run_after)
        else:
            moved = run_days(conf, start, end, run_after)
        if not moved:
            continue
        state = str(getattr(state, "value", state))
        order = (run_after or dt.datetime.min.replace(tzinfo=dt.UTC), run_pk)
        for day in moved:
            if (dag_id, day) not in latest or latest[(dag_id, day)][0] < order:
                latest[(dag_id, day)] = (order, state)
        states = out.setdefault(dag_id, DayStates())
        if state == "success" and end_date and (states.last_success is None or end_date > states.last_success):
            states.last_success, states.last_success_day = end_date, moved[-1]
    for (dag_id, day), (_, state) in latest.items():
        states = out[dag_id]
        if state == "success":
            states.succeeded.add(day)
        elif state == "failed":
            states.failed.add(day)
        elif state in RUNNING_STATES:
            states.running.add(day)
    return out


@dataclass
class Moved:
    """What the registrations of one team table carried (their asset events): rows and bytes of the latest
    registration of each partition (a re-run replaces its day, it does not add to it), and the newest day."""

    rows: int = 0
    bytes: int = 0
    latest_day: dt.date | None = None
    partitions: int = 0


def asset_name(team_id: int, table: str) -> str:
    """The name :func:`airflow_provider_duckling.assets.ducklake.duckling_asset` gives a team's table (no Airflow import)."""
    return f"duckling_team_{int(team_id)}_{table}"


def registrations(tables: dict[str, tuple[int, str]]) -> dict[tuple[int, str], Moved]:
    """Rows, bytes and newest day registered per (team, table), from the asset events every registration
    emits: one query over the metadata DB for all teams.

    :param tables: asset name → (team id, table), see :func:`asset_name`.
    """
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    names = sorted(tables)
    events: list[tuple[str, str | None, Any, int]] = []
    with create_session() as session:
        for chunk in _chunks(names):
            events += [tuple(r) for r in session.execute(  # type: ignore[misc]
                select(AssetModel.name, AssetEvent.partition_key, AssetEvent.extra, AssetEvent.id)
                .join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.name.in_(chunk))
            )]
    return fold_registrations(events, tables)


def fold_registrations(events: Iterable[tuple[str, str | None, Any, int]],
                       tables: dict[str, tuple[int, str]]) -> dict[tuple[int, str], Moved]:
    """The latest event per partition counts; ``{team}_full`` events count for their rows but name no day (pure)."""
    latest: dict[tuple[str, str], tuple[int, Any]] = {}
    for name, key, extra, event_id in events:
        if name not in tables or not key:
            continue
        if (name, key) not in latest or latest[(name, key)][0] < event_id:
            latest[(name, key)] = (event_id, extra)
    out: dict[tuple[int, str], Moved] = {}
    for (name, key), (_, extra) in latest.items():
        moved = out.setdefault(tables[name], Moved())
        extra = extra if isinstance(extra, dict) else {}
        moved.rows += _count(extra.get("rows"))
        moved.bytes += _count(extra.get("bytes"))
        moved.partitions += 1
        match = _KEY.match(key)
        if match:
            try:
                day = dt.date.fromisoformat(match.group(1))
            except ValueError:
                continue
            if moved.latest_day is None or day > moved.latest_day:
                moved.latest_day = day
    return out


def _count(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0
