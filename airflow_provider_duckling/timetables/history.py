"""The team DAGs' schedule: history in batches of days, then one day per run.

Runs of days before the team's *daily-from* day (:mod:`~airflow_provider_duckling.domain.history`) have a
data interval of many days: a block of calendar months of events (``months``: a quarter by default; clipped
to the DAG's start and the daily-from day), or persons' whole history up to the daily-from day in one run. From the daily-from day on, each run
is one UTC day, as with :class:`~airflow_provider_duckling.timetables.daily.DailyCronDataIntervalTimetable`,
whose manual-run intervals and registry pause this keeps: a run triggered at D 00:00 covers day D alone.

Airflow computes each next interval from the last one's end, so a catch-up that has passed some days
(daily runs made before an upgrade, a run that already took a batch's first day) goes on from there:
no day is skipped or run twice by the schedule. ``airflow backfill create`` walks the same intervals.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction

from airflow_provider_duckling.domain.history import MONTH, MONTHS, batch_end
from airflow_provider_duckling.timetables.daily import DailyCronDataIntervalTimetable


class HistoryBatchTimetable(DailyCronDataIntervalTimetable):
    """Daily data intervals from ``daily_from`` on; before it, batches of history.

    :param daily_from: the first day with one run per day; ``None``: every run is one day.
    :param batch: ``"month"`` (calendar months per run) or ``"whole"`` (all history before
        ``daily_from`` in one run).
    :param months: with ``"month"``, how many calendar months one run spans (1, 2, 3, 4, 6 or 12; aligned to
        the year: 3 is a calendar quarter).
    :param paused: schedule nothing (see the parent class).
    """

    def __init__(self, cron: str, timezone: Any, *, daily_from: dt.date | None = None, batch: str = MONTH,
                 months: int = 1, paused: bool = False) -> None:
        super().__init__(cron, timezone, paused=paused)
        batch_end(dt.date(2000, 1, 1), dt.date(2000, 1, 2), batch, months)  # validates the batch kind and size
        self.daily_from = daily_from
        self.batch = batch
        self.months = months

    @property
    def summary(self) -> str:
        if self.daily_from is None:
            return super().summary
        size = f"{self.months}-month" if self.batch == MONTH else self.batch
        return f"{super().summary}; history before {self.daily_from} in {size} batches"

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        """Airflow's next daily interval, widened to its batch when it starts before ``daily_from``."""
        info = super().next_dagrun_info(last_automated_data_interval=last_automated_data_interval,
                                        restriction=restriction)
        if info is None or info.data_interval is None or self.daily_from is None:
            return info
        start = info.data_interval.start
        end_day = batch_end(start.date(), self.daily_from, self.batch, self.months)
        end = start + dt.timedelta(days=(end_day - start.date()).days)
        return DagRunInfo.interval(start=start, end=end)

    def serialize(self) -> dict[str, Any]:
        out = super().serialize()
        if self.daily_from is not None:
            out["daily_from"] = self.daily_from.isoformat()
            out["batch"] = self.batch
            if self.months != 1:
                out["months"] = self.months
        return out

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> HistoryBatchTimetable:
        timetable = super().deserialize(data)
        raw = data.get("daily_from")
        timetable.daily_from = dt.date.fromisoformat(raw) if isinstance(raw, str) else None  # type: ignore[attr-defined]
        timetable.batch = data.get("batch", MONTH) if data.get("batch") in ("month", "whole") else MONTH  # type: ignore[attr-defined]
        timetable.months = data.get("months") if data.get("months") in MONTHS else 1  # type: ignore[attr-defined]
        return timetable  # type: ignore[return-value]
