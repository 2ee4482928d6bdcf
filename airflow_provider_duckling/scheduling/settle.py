"""The settle wait: a team run waits for late events only while its day has just ended.

Airflow's ``TimeDeltaSensor`` measures the delay from the run's data interval end, or from when the run was
created when it has none. Runs triggered without a logical date (the UI's default, ``airflow dags trigger``,
``duckling run``, the later pass) have none, so a repair of a day that closed weeks ago waited the whole
settle delay after its trigger, and a run with a ``partition_key`` measured it from the wrong day.

Here the delay is measured from the end of the day the run actually moves: the ``partition_key``'s day when
one is given, else the run's data interval, else the day before the run was created (the day the DAG's day
template picks). Whatever the run type, a day that closed more than the settle delay ago passes at once; a
day that has just ended waits what is left of the delay (a manual run included: its data is still arriving).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor

_KEY = re.compile(r"[0-9]{1,19}_([0-9]{4}-[0-9]{2}-[0-9]{2})(?:\.\.([0-9]{4}-[0-9]{2}-[0-9]{2}))?", re.ASCII)


def day_closed_at(partition_key: Any, data_interval_end: dt.datetime | None, run_after: dt.datetime | None,
                  ) -> dt.datetime:
    """When the (last) day a run moves ended (UTC).

    :param partition_key: the rendered ``partition_key`` option, a day or a range of days (its last day
        counts); anything that is not a valid key is ignored here (the export task refuses it with its own
        message).
    :param data_interval_end: the run's data interval end, if it has one.
    :param run_after: when the run was created (used only without a key and an interval).
    """
    match = _KEY.fullmatch(partition_key) if isinstance(partition_key, str) else None
    if match:
        try:
            day = dt.date.fromisoformat(match.group(2) or match.group(1))
            return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        except (ValueError, OverflowError):
            pass
    if data_interval_end is not None:
        return data_interval_end
    if run_after is None:
        raise ValueError("the run has neither a partition key, a data interval nor a run_after")
    return dt.datetime.combine(run_after.astimezone(dt.UTC).date(), dt.time(), tzinfo=dt.UTC)


class LateEventsSensor(TimeDeltaSensor):
    """Wait until the run's day has ended plus ``delta`` (the settle delay); a day that ended longer ago
    passes at once, whatever started the run.

    :param delta: the settle delay (templated).
    :param partition_key: the partition the run moves, ``{team_id}_{YYYY-MM-DD}`` or a range
        ``{team_id}_{first}..{last}`` (templated); its (last) day decides the wait. Empty: the run's data interval, else the day before the run was created.
    """

    template_fields: Sequence[str] = (*TimeDeltaSensor.template_fields, "partition_key")

    def __init__(self, *, partition_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition_key = partition_key

    def _derive_base_time(self, context: Mapping[str, Any]) -> dt.datetime:  # type: ignore[override]
        dag_run = context.get("dag_run")
        closed_at = day_closed_at(self.partition_key, context.get("data_interval_end"),
                                  getattr(dag_run, "run_after", None))
        now = dt.datetime.now(dt.UTC)
        if closed_at > now:
            # A day that has not ended (a key for today or later) is the export's mistake to refuse, at once
            # and in one line; waiting here would hold the run until that day's end.
            return now - dt.timedelta(days=7)
        return closed_at
