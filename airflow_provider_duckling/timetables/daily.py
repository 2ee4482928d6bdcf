"""The team DAGs' daily schedule: Airflow's ``CronDataIntervalTimetable``, with one change for manual runs.

Scheduled and catch-up runs are unchanged: the run of day D has logical date D 00:00 UTC and the data
interval [D, D + 1), and starts once D has ended.

A manual run whose logical date falls exactly on a day boundary (D 00:00 UTC) covers day D, as a scheduled
run with that logical date would. Airflow's default gives it the day *before* D, which both exports the
wrong day and stalls catch-up: when catch-up reaches D, the scheduler skips D (a run with that logical
date exists) and computes the next run from the manual run's interval [D - 1, D) — which is D again,
forever. Any other time keeps Airflow's default (the last day that ended before it), as does a run
without a logical date (the DAG's day template then falls back to the day before the run).

This is what lets a top-up (``duckling_topup_recent_days``) or a person in the trigger form run day D
ahead of the catch-up: the run takes D's place, and catch-up skips D and goes on with D + 1.

``paused=True`` (a team paused in the registry) schedules nothing, while manual runs keep the same data
intervals; it is serialized only when set, so an unpaused DAG serializes exactly as before. When the pause
ends, catch-up resumes from the last scheduled run and back-fills the days the pause skipped.
"""

from __future__ import annotations

from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable


class DailyCronDataIntervalTimetable(CronDataIntervalTimetable):
    """``CronDataIntervalTimetable`` where a manual run at a schedule boundary covers the interval it starts.

    :param paused: schedule nothing (manual runs still get their day's interval).
    """

    def __init__(self, cron: str, timezone: Any, *, paused: bool = False) -> None:
        super().__init__(cron, timezone)
        self.paused = paused

    @property
    def summary(self) -> str:
        return f"{super().summary} (paused in the registry)" if self.paused else super().summary

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        """Nothing while paused; else Airflow's schedule."""
        if self.paused:
            return None
        return super().next_dagrun_info(last_automated_data_interval=last_automated_data_interval,
                                        restriction=restriction)

    def serialize(self) -> dict[str, Any]:
        out = super().serialize()
        if self.paused:
            out["paused"] = True
        return out

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> DailyCronDataIntervalTimetable:
        timetable = super().deserialize(data)  # cls(expression, timezone): an instance of this class
        timetable.paused = data.get("paused") is True  # type: ignore[attr-defined]
        return timetable  # type: ignore[return-value]

    def infer_manual_data_interval(self, *, run_after: Any) -> DataInterval:
        """[run_after, next boundary) when ``run_after`` is on a boundary, else Airflow's default."""
        if self._align_to_prev(run_after) == run_after:
            end = self._get_next(run_after)
            return DataInterval(start=self._get_prev(end), end=end)
        return super().infer_manual_data_interval(run_after=run_after)
