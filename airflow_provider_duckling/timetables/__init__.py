"""Airflow timetables: the team DAGs' daily data-interval schedule (:mod:`.daily`)."""

from airflow_provider_duckling.timetables.daily import DailyCronDataIntervalTimetable

__all__ = ["DailyCronDataIntervalTimetable"]
