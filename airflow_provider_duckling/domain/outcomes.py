"""How a team run ended: one code and one phrase, the same in the task log, in XCom and in ``duckling run``.

Airflow calls a run *success* when its tasks succeeded or were skipped, so its state alone cannot say
whether the day reached the lake. The task that decides records an :class:`Outcome` (XCom key
``outcome``, and one ``event=run_outcome`` line in its log); ``duckling run`` shows it, and shows the run
as ``skipped`` rather than ``success`` when it moved nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

XCOM_KEY = "outcome"

REGISTERED = "registered"
DRY_RUN = "dry_run"
NOT_REGISTERED = "not_registered"
COVERED = "covered_by_full_export"
BEFORE_START = "before_start"


@dataclass(frozen=True)
class Outcome:
    """What one run did to its partition.

    :param code: a stable word for scripts (``registered``, ``dry_run``, ``not_registered``,
        ``covered_by_full_export``, ``before_start``).
    :param detail: the phrase people read (the ``outcome`` column of ``duckling run``).
    :param moved: whether the run changed the lake.
    """

    code: str
    detail: str
    moved: bool

    def to_xcom(self) -> dict[str, Any]:
        return {"outcome": self.code, "detail": self.detail, "moved": self.moved}

    @classmethod
    def from_xcom(cls, value: Any) -> Outcome | None:
        """The outcome a task recorded; ``None`` when there is none (a run of an earlier release)."""
        if not isinstance(value, dict) or not isinstance(value.get("outcome"), str):
            return None
        return cls(value["outcome"], str(value.get("detail") or value["outcome"]), bool(value.get("moved")))


def registered(paused: bool = False) -> Outcome:
    """The day is in the lake. A team paused in the registry still moves a day run by hand: say so."""
    if paused:
        return Outcome(REGISTERED, "registered (team paused in the registry: a run by hand still moves its day)", True)
    return Outcome(REGISTERED, "registered", True)


def dry_run() -> Outcome:
    return Outcome(DRY_RUN, "dry run: nothing written (rows, files: what it would write)", False)


def not_registered() -> Outcome:
    return Outcome(NOT_REGISTERED, "exported, not registered (skip_ducklake_registration): the lake is untouched", False)


def covered(baseline: dt.datetime) -> Outcome:
    """A persons day the lake's full export already holds: a top-up would only write superseded rows."""
    return Outcome(COVERED, f"covered by the full export of persons read at {baseline:%Y-%m-%d %H:%M:%S} UTC", False)


def before_start(start: dt.date | None) -> Outcome:
    """A run whose logical date is before its DAG's start: Airflow gives it no task, so nothing ran."""
    when = f" ({start.isoformat()})" if start else ""
    return Outcome(BEFORE_START, f"nothing ran: the run's logical date is before the DAG's start{when}", False)
