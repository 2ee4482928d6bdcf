"""The provider's metrics, sent through Airflow's own metrics client (``airflow.sdk.observability.stats``),
so they go wherever Airflow's ``[metrics]`` section sends Airflow's: StatsD, Datadog or OpenTelemetry, and
nowhere when none is on.

Every name carries the team and the table (``duckling.lag_days.team_42.events``), the way Airflow's own
per-DAG names do, because plain StatsD has no tags; the same values also go as tags (``team_id``, ``table``)
for backends that index them. Emitting never fails a task: a metrics problem is logged and dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_duckling.health.freshness import TableFreshness
    from airflow_provider_duckling.health.reconcile import DayComparison

log = logging.getLogger(__name__)

PREFIX = "duckling"


def metric_name(measure: str, team_id: int, table: str) -> str:
    """``duckling.{measure}.team_{team_id}.{table}``: StatsD-safe (letters, digits, ``_ . -``)."""
    return f"{PREFIX}.{measure}.team_{int(team_id)}.{table}"


def _tags(team_id: int, table: str) -> dict[str, str]:
    return {"team_id": str(int(team_id)), "table": table}


def _send(kind: str, measure: str, team_id: int, table: str, value: float) -> None:
    from airflow.sdk.observability import stats

    try:
        if kind == "gauge":
            stats.gauge(metric_name(measure, team_id, table), value, tags=_tags(team_id, table))
        else:
            stats.incr(metric_name(measure, team_id, table), int(value), tags=_tags(team_id, table))
    except Exception as exc:  # noqa: BLE001 - a metrics backend problem must never fail the data's task
        log.warning("event=metric_dropped metric=%s reason=%s", metric_name(measure, team_id, table), type(exc).__name__)


def day_epoch(day: dt.date | None) -> int:
    """A day as the Unix time of its 00:00 UTC (0 for none): what dashboards show as a date."""
    if day is None:
        return 0
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())


def partition_registered(team_id: int, table: str, rows: int, nbytes: int, invalid_utf8: int = 0) -> None:
    """Counters of what one registered partition moved: ``registered_partitions``, ``registered_rows``,
    ``registered_bytes``, and ``invalid_utf8_values`` (text values written with U+FFFD in place of bytes that
    were not UTF-8; sent only when there were some) — called by the register operator once the lake's
    transaction committed."""
    _send("incr", "registered_partitions", team_id, table, 1)
    _send("incr", "registered_rows", team_id, table, rows)
    _send("incr", "registered_bytes", team_id, table, nbytes)
    if invalid_utf8:
        _send("incr", "invalid_utf8_values", team_id, table, invalid_utf8)


def freshness(report: Iterable[TableFreshness]) -> int:
    """Gauges per team and table: ``latest_day`` (Unix time of the newest day held, 0 for none),
    ``lag_days`` (days behind the last closed day), ``failed_days``. Returns how many tables were sent."""
    sent = 0
    for item in report:
        _send("gauge", "latest_day", item.team_id, item.table, day_epoch(item.latest_day))
        if item.lag_days is not None:
            _send("gauge", "lag_days", item.team_id, item.table, item.lag_days)
        _send("gauge", "failed_days", item.team_id, item.table, len(item.failed_days))
        sent += 1
    return sent


def reconciliation(found: Iterable[DayComparison], rerun: Iterable[DayComparison]) -> None:
    """Per team and table: gauge ``reconcile.differing_days`` (days whose source and lake differ now) and
    counter ``reconcile.reruns`` (repair runs started by this pass)."""
    differing: dict[tuple[int, str], int] = {}
    for item in found:
        key = (item.team_id, item.table)
        differing[key] = differing.get(key, 0) + (0 if item.matches else 1)
    for (team_id, table), count in sorted(differing.items()):
        _send("gauge", "reconcile.differing_days", team_id, table, count)
    for item in rerun:
        _send("incr", "reconcile.reruns", item.team_id, item.table, 1)
