"""History in batches: which days one catch-up run of a team moves.

A team's days before its *daily-from* day are history and move in batches — calendar months of events
per run (``[duckling] history_batch_months``, default 3: a calendar quarter; clipped to the team's start and
to the daily-from day), or all of persons' history in one run
(persons history is the one full export). From the daily-from day on, each day is its own run: the daily
top-up. The daily-from day is fixed per team (``[duckling] topup_days`` before the day the duckling was
first seen, see :func:`daily_from`), so the intervals of runs already made never change.
"""

from __future__ import annotations

import datetime as dt

#: How a table's history is cut into runs.
MONTH = "month"
#: The numbers of months a batch may span: each divides the year, so batches align to calendar quarters etc.
MONTHS = (1, 2, 3, 4, 6, 12)
WHOLE = "whole"
BATCHES = (MONTH, WHOLE)


def next_month(day: dt.date) -> dt.date:
    """The first day of the month after ``day``'s."""
    return (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def next_boundary(day: dt.date, months: int = 1) -> dt.date:
    """The first day after ``day`` that starts a calendar block of ``months`` months (a quarter: Jan, Apr,
    Jul, Oct)."""
    if months not in MONTHS:
        raise ValueError(f"a history batch spans {MONTHS} months, not {months!r}")
    boundary = next_month(day)
    while (boundary.month - 1) % months:
        boundary = next_month(boundary)
    return boundary


def batch_end(first: dt.date, daily_from: dt.date | None, batch: str = MONTH, months: int = 1) -> dt.date:
    """The exclusive end of the run that starts on ``first``: a single day from ``daily_from`` on (or
    without one), else the end of ``first``'s block of ``months`` calendar months (:data:`MONTH`) or
    ``daily_from`` itself (:data:`WHOLE`), never past ``daily_from``."""
    if batch not in BATCHES:
        raise ValueError(f"unknown history batch {batch!r}: expected one of {BATCHES}")
    if daily_from is None or first >= daily_from:
        return first + dt.timedelta(days=1)
    return daily_from if batch == WHOLE else min(next_boundary(first, months), daily_from)


def daily_from(first_seen: dt.date, topup_days: int) -> dt.date:
    """The first day a team moves one day per run: the ``topup_days`` days before the day it was first
    seen are the days the top-up runs ahead of history, so they are daily runs already."""
    return first_seen - dt.timedelta(days=max(topup_days, 1))


def catchup_runs(start: dt.date, today: dt.date, first_day_daily: dt.date | None, batch: str = MONTH,
                 months: int = 1) -> int:
    """How many scheduled runs catch a table up from ``start`` to the last closed day (for the docs and
    benchmarks: the count the timetable makes)."""
    runs, day = 0, start
    while day < today:
        day = batch_end(day, first_day_daily, batch, months)
        runs += 1
    return runs
