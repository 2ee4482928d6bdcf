"""The provider's Airflow plugin (entry point ``airflow.plugins``), loaded by every Airflow component.

It registers what Airflow must find by class path when it reads a serialized DAG: the priority strategy
:class:`~airflow_provider_duckling.scheduling.priority.RecentDaysFirst` and the team DAGs' timetables
:class:`~airflow_provider_duckling.timetables.history.HistoryBatchTimetable` and (the versions before
history batches) :class:`~airflow_provider_duckling.timetables.daily.DailyCronDataIntervalTimetable`; and, in the
api-server, the one-line trigger refusals (:mod:`~airflow_provider_duckling.plugins.trigger_errors`).

DAG versions serialized before 0.2 name both classes by their old paths
(``airflow_provider_duckling.priority.RecentDaysFirst``,
``airflow_provider_duckling.timetables.DailyCronDataIntervalTimetable``), and Airflow looks a registered
class up by exactly that string. The two ``Legacy*`` aliases below carry those names, so an upgraded
deployment still reads its DAGs' older versions (the grid, old task instances); new versions name the new
paths.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_duckling.plugins.trigger_errors import MIDDLEWARE as TRIGGER_ERRORS
from airflow_provider_duckling.scheduling.priority import RecentDaysFirst
from airflow_provider_duckling.timetables.daily import DailyCronDataIntervalTimetable
from airflow_provider_duckling.timetables.history import HistoryBatchTimetable


def _legacy_alias(cls: type, old_module: str) -> type:
    """A subclass of ``cls`` that Airflow registers under ``{old_module}.{cls.__name__}``."""
    return type(cls.__name__, (cls,), {"__module__": old_module, "__doc__": f"{cls.__name__} under its pre-0.2 path."})


LegacyRecentDaysFirst = _legacy_alias(RecentDaysFirst, "airflow_provider_duckling.priority")
LegacyDailyTimetable = _legacy_alias(DailyCronDataIntervalTimetable, "airflow_provider_duckling.timetables")


class DucklingPlugin(AirflowPlugin):
    """Registers the priority strategy and the timetable (each also under its pre-0.2 path) with Airflow
    (scheduler, dag-processor, api-server), and in the api-server the one-line trigger refusals."""

    name = "duckling"
    priority_weight_strategies = [RecentDaysFirst, LegacyRecentDaysFirst]
    timetables = [HistoryBatchTimetable, DailyCronDataIntervalTimetable, LegacyDailyTimetable]
    fastapi_root_middlewares = [TRIGGER_ERRORS]
