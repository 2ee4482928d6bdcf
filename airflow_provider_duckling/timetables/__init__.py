"""Airflow timetables: the team DAGs' schedule — history in batches, then one day per run
(:mod:`.history`), built on the daily data-interval schedule (:mod:`.daily`)."""

from airflow_provider_duckling.timetables.daily import DailyCronDataIntervalTimetable
from airflow_provider_duckling.timetables.history import HistoryBatchTimetable

__all__ = ["DailyCronDataIntervalTimetable", "HistoryBatchTimetable"]
