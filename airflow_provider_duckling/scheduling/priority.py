"""Top-ups ahead of history: the priority each duckling task gets when Airflow creates it.

A team's catch-up can be years of runs; its daily top-up, and every other team's, must not queue behind
them. Airflow ranks queued tasks by ``priority_weight`` when slots (the export pool) are scarce, and
computes it once, when it creates the task instance: :class:`RecentDaysFirst` gives runs of the last
``[duckling] topup_days`` days (and manual runs, which a person is waiting for) a high weight, and
history a low one — including a batch of events history that ends recently (its run is named by its end);
persons history, one full export per team, ranks by its end like a top-up, as it is the team's onboarding. The strategy reaches the scheduler through the provider's plugin
(:mod:`airflow_provider_duckling.plugins.duckling`, entry point ``airflow.plugins``), which Airflow loads in
every component, together with the team DAGs' timetable.

Airflow serializes a task's strategy as its class path, so an instance on the task is stable across
parses; inside ``default_args`` it would be written with its memory address (a new DAG version per parse).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from airflow.task.priority_strategy import PriorityWeightStrategy

TOPUP_WEIGHT = 100
HISTORY_WEIGHT = 1
_RUN_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def run_day(run_id: str) -> dt.date | None:
    """The date a run id names: scheduled and backfill runs carry their date, manual runs their trigger
    time, later passes their partition key; ``None`` when there is none."""
    match = _RUN_DATE.search(run_id or "")
    if not match:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


_BATCHABLE = ("scheduled__", "backfill__")


def weight_for(run_id: str, today: dt.date, topup_days: int, daily_from: dt.date | None = None) -> int:
    """High for the last ``topup_days`` days (and runs without a date), low for history.

    :param daily_from: the DAG's daily-from day: a scheduled or backfill run named by a date on or before it
        (its run-after, the end of its data interval) is a batch of history, however recent its end.
    """
    day = run_day(run_id)
    if day is not None and daily_from is not None and run_id.startswith(_BATCHABLE) and day <= daily_from:
        return HISTORY_WEIGHT
    if day is None or (today - day).days <= topup_days:
        return TOPUP_WEIGHT
    return HISTORY_WEIGHT


class RecentDaysFirst(PriorityWeightStrategy):
    """Priority weight: :data:`TOPUP_WEIGHT` for recent days and manual runs, :data:`HISTORY_WEIGHT` else."""

    def get_weight(self, ti: Any) -> int:
        from airflow_provider_duckling.registry.settings import topup_days

        try:  # the DAG's timetable says where its history batches end (absent: every run is one day)
            timetable = ti.task.dag.timetable
            # Months of events are history; persons history is one run per team, its onboarding: as before.
            daily_from = getattr(timetable, "daily_from", None) if getattr(timetable, "batch", None) == "month" else None
        except AttributeError:
            daily_from = None
        return weight_for(str(ti.run_id), dt.datetime.now(dt.UTC).date(), topup_days(),
                          daily_from if isinstance(daily_from, dt.date) else None)
