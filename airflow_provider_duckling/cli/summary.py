"""Per team and table, how fresh a duckling is: pure computations over what ``duckling status`` reads.

No I/O here: the inputs are the table's start date, the state of each day's latest Airflow run
(:class:`~airflow_provider_duckling.cli.history.DayStates`), the days the lake holds (when read) and what
the registrations carried (:class:`~airflow_provider_duckling.cli.history.Moved`), so the same figures can
feed metrics as well as the command.

*Latest day* is the newest day the lake holds or whose latest run succeeded; *lag* is how many closed,
settled days lie after it (a table with nothing yet lags by every day since its start; ``None`` while its
start date is still being discovered).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from airflow_provider_duckling.cli.history import DayStates, Moved


def last_closed_day(now: dt.datetime, settle: dt.timedelta) -> dt.date:
    """The newest UTC day that has ended and settled by ``now``: the newest day any run may have loaded."""
    today = now.astimezone(dt.UTC).date()
    day = today - dt.timedelta(days=1)
    while dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC) + settle > now:
        day -= dt.timedelta(days=1)
    return day


@dataclass(frozen=True)
class TableFigures:
    """One team table's freshness."""

    team_id: int
    table: str
    start: dt.date | None
    expected_days: int | None
    latest_day: dt.date | None
    lag_days: int | None
    failed_days: tuple[dt.date, ...]
    running_days: int
    covered_days: int
    registered_days: int | None
    rows: int
    bytes: int
    last_success: dt.datetime | None
    last_success_day: dt.date | None
    paused: bool = False

    def to_json(self) -> dict[str, object]:
        """The machine-readable form (dates ISO, counts as numbers, failed days listed)."""
        return {
            "table": self.table, "start_date": self.start, "expected_days": self.expected_days,
            "latest_day": self.latest_day, "lag_days": self.lag_days, "failed_days": list(self.failed_days),
            "running_days": self.running_days, "covered_days": self.covered_days,
            "registered_days": self.registered_days, "rows": self.rows, "bytes": self.bytes,
            "last_success": self.last_success, "last_success_day": self.last_success_day,
        }


def table_figures(
    team_id: int, table: str, start: dt.date | None, *, last_closed: dt.date, expected_until: dt.date,
    runs: DayStates, lake_days: set[dt.date] | None, moved: Moved, paused: bool = False,
) -> TableFigures:
    """The figures of one team table.

    :param start: the table's first day (registry, else discovered); ``None`` while discovery is pending.
    :param last_closed: the day lag is measured against (:func:`last_closed_day`).
    :param expected_until: the last day counted as expected (yesterday, UTC).
    :param runs: the table's days by the state of their latest run.
    :param lake_days: the days the lake holds rows for, or ``None`` when the lake was not read.
    :param moved: what the table's registrations carried.
    """
    held = set(lake_days or ())
    done = {d for d in runs.succeeded | held if d <= expected_until}
    if moved.latest_day is not None and moved.latest_day <= expected_until:
        done.add(moved.latest_day)
    latest = max(done) if done else None
    if latest is not None:
        lag: int | None = max((last_closed - latest).days, 0)
    elif start is not None:
        lag = max((last_closed - start).days + 1, 0)
    else:
        lag = None
    expected = max((expected_until - start).days + 1, 0) if start else None
    covered = {d for d in runs.succeeded | held if start and start <= d <= expected_until}
    return TableFigures(
        team_id=team_id, table=table, start=start, expected_days=expected, latest_day=latest, lag_days=lag,
        failed_days=tuple(sorted(runs.failed)), running_days=len(runs.running), covered_days=len(covered),
        registered_days=len(lake_days) if lake_days is not None else None, rows=moved.rows, bytes=moved.bytes,
        last_success=runs.last_success, last_success_day=runs.last_success_day, paused=paused,
    )


@dataclass(frozen=True)
class TeamSummary:
    """One team's line: the worst lag of its tables, and their failed days, rows and bytes added up."""

    team_id: int
    tables: dict[str, TableFigures] = field(default_factory=dict)
    paused: bool = False

    @property
    def lag_days(self) -> int | None:
        lags = [f.lag_days for f in self.tables.values() if f.lag_days is not None]
        return max(lags) if lags else None

    @property
    def pending(self) -> bool:
        """Some table's start date is still being discovered."""
        return any(f.start is None for f in self.tables.values())

    @property
    def failed_days(self) -> int:
        return sum(len(f.failed_days) for f in self.tables.values())

    @property
    def running_days(self) -> int:
        return sum(f.running_days for f in self.tables.values())

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.tables.values())

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.tables.values())

    @property
    def behind(self) -> bool:
        """Lags, or has failed days, or waits for discovery: what ``--behind`` keeps."""
        return bool(self.lag_days) or self.failed_days > 0 or self.pending

    def to_json(self) -> dict[str, object]:
        return {
            "team_id": self.team_id, "paused": self.paused, "pending_discovery": self.pending,
            "lag_days": self.lag_days, "failed_days": self.failed_days, "running_days": self.running_days,
            "rows": self.rows, "bytes": self.bytes,
            "tables": {name: f.to_json() for name, f in self.tables.items()},
        }


def summarise(figures: Iterable[TableFigures]) -> list[TeamSummary]:
    """Group table figures by team (team order)."""
    teams: dict[int, TeamSummary] = {}
    for f in figures:
        team = teams.setdefault(f.team_id, TeamSummary(f.team_id, {}, f.paused))
        team.tables[f.table] = f
    return [teams[t] for t in sorted(teams)]


def worst_first(teams: Iterable[TeamSummary]) -> list[TeamSummary]:
    """Pending discovery first (no lag can be told), then the largest lag, then the most failed days."""
    return sorted(teams, key=lambda t: (not t.pending, -(t.lag_days or 0), -t.failed_days, t.team_id))


def totals(teams: list[TeamSummary]) -> dict[str, int]:
    """The header's counts."""
    return {
        "teams": len(teams),
        "behind": sum(1 for t in teams if t.lag_days),
        "failing": sum(1 for t in teams if t.failed_days),
        "running": sum(1 for t in teams if t.running_days),
        "paused": sum(1 for t in teams if t.paused),
        "pending_discovery": sum(1 for t in teams if t.pending),
        "rows": sum(t.rows for t in teams),
        "bytes": sum(t.bytes for t in teams),
    }


def human_bytes(size: int) -> str:
    """``23.6MB`` (decimal units, one token: plain output stays splittable on spaces)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{size}B"  # pragma: no cover
