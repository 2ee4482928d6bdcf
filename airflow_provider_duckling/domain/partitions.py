"""Partitions: one team's data for one UTC day, their keys and where their files live.

A partition key is ``{team_id}_{YYYY-MM-DD}`` (the original system's format). Object keys follow
``backfill/{table}/team_id={team_id}/year={YYYY}/month={MM}/day={DD}/{run_token}.parquet``.
A batch of consecutive days (:class:`DayRange`, key ``{team_id}_{first}..{last}``) is moved by one run
but keeps that layout: each of its days gets its own file(s) under its own day's prefix.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from airflow_provider_duckling.common.errors import PartitionError, quoted

EPOCH = dt.date(1970, 1, 1)
# ASCII digits only (``\d`` would take a full-width ``７``) and ``fullmatch`` (``$`` matches before a newline).
_KEY = re.compile(r"([0-9]{1,19})_([0-9]{4}-[0-9]{2}-[0-9]{2})", re.ASCII)
_TEAM = re.compile(r"[0-9]{1,19}", re.ASCII)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_RANGE_KEY = re.compile(r"([0-9]{1,19})_([0-9]{4}-[0-9]{2}-[0-9]{2})\.\.([0-9]{4}-[0-9]{2}-[0-9]{2})", re.ASCII)
_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DAY_IN_KEY = re.compile(r"/year=([0-9]{4})/month=([0-9]{2})/day=([0-9]{2})/([^/]+)$", re.ASCII)
MAX_RANGE_DAYS = 366
"""The most days one run moves (a batch of history is a calendar quarter; a typed range at most a year)."""


def validate_team_id(team_id: object) -> int:
    """Return ``team_id`` as a positive int, or raise :class:`PartitionError`."""
    if isinstance(team_id, bool):
        raise PartitionError(f"invalid team id {quoted(team_id)}: expected a positive integer")
    if isinstance(team_id, str) and _TEAM.fullmatch(team_id):  # no whitespace, ASCII digits, at most 19
        team_id = int(team_id)
    if not isinstance(team_id, int) or team_id <= 0 or team_id >= 2**63:
        raise PartitionError(f"invalid team id {quoted(team_id)}: expected a positive integer")
    return team_id


def parse_day(value: object, *, today: dt.date | None = None) -> dt.date:
    """Parse ``YYYY-MM-DD`` (or accept a date/datetime) as a closed UTC day between 1970 and yesterday."""
    if isinstance(value, dt.datetime):
        day = value.astimezone(dt.UTC).date() if value.tzinfo else value.date()
    elif isinstance(value, dt.date):
        day = value
    elif isinstance(value, str) and _DAY.fullmatch(value):
        try:
            day = dt.date.fromisoformat(value)
        except ValueError as exc:
            raise PartitionError(f"invalid day {quoted(value)}: {exc}") from None
    else:
        raise PartitionError(f"invalid day {quoted(value)}: expected YYYY-MM-DD")
    today = today or dt.datetime.now(dt.UTC).date()
    if day < EPOCH:
        raise PartitionError(f"invalid day {day}: before 1970-01-01")
    if day >= today:
        raise PartitionError(f"invalid day {day}: the UTC day has not ended yet (today is {today})")
    return day


@dataclass(frozen=True, order=True)
class Partition:
    """One team's data for one UTC day."""

    team_id: int
    day: dt.date

    @classmethod
    def parse(cls, key: str) -> Partition:
        """Parse a ``{team_id}_{YYYY-MM-DD}`` key, validating both halves."""
        match = _KEY.fullmatch(key) if isinstance(key, str) else None
        if not match:
            raise PartitionError(f"invalid partition key {quoted(key)}: expected {{team_id}}_{{YYYY-MM-DD}}, e.g. 12345_2024-01-15")
        return cls(validate_team_id(int(match.group(1))), parse_day(match.group(2)))

    @property
    def key(self) -> str:
        return f"{self.team_id}_{self.day.isoformat()}"

    @property
    def start(self) -> dt.datetime:
        """Inclusive UTC start of the day."""
        return dt.datetime.combine(self.day, dt.time(), tzinfo=dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """Exclusive UTC end of the day."""
        return self.start + dt.timedelta(days=1)

    def prefix(self, table: str) -> str:
        """Object-key prefix holding this partition's files for ``table``."""
        d = self.day
        return f"backfill/{table}/team_id={self.team_id}/year={d:%Y}/month={d:%m}/day={d:%d}/"

    def object_key(self, table: str, run_token: str) -> str:
        """Object key of the file written by one attempt of one run."""
        return f"{self.prefix(table)}{run_token}.parquet"

    def lake_predicate(self, day_column: str) -> str:
        """SQL predicate (values as literals) selecting this partition's rows in the lake."""
        from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal

        col = duckdb_ident(day_column)
        return (f"team_id = {duckdb_literal(self.team_id)} AND {col} >= {duckdb_literal(self.start)} "
                f"AND {col} < {duckdb_literal(self.end)}")


@dataclass(frozen=True, order=True)
class FullExport:
    """All of one team's rows (the persons full export): replaces the team's whole table in one swap."""

    team_id: int

    @property
    def key(self) -> str:
        return f"{self.team_id}_full"

    def prefix(self, table: str) -> str:
        return f"backfill/{table}/team_id={self.team_id}/full/"

    def object_key(self, table: str, run_token: str) -> str:
        return f"{self.prefix(table)}{run_token}.parquet"

    def lake_predicate(self, day_column: str) -> str:
        from airflow_provider_duckling.common.quoting import duckdb_literal

        return f"team_id = {duckdb_literal(self.team_id)}"


@dataclass(frozen=True, order=True)
class DayRange:
    """Consecutive UTC days of one team, ``first`` to ``last`` inclusive, moved by one run (a batch of
    history): one ClickHouse statement (or a few) writes each day's own file(s), one lake transaction swaps
    them all in."""

    team_id: int
    first: dt.date
    last: dt.date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise PartitionError(f"invalid day range {self.first}..{self.last}: the last day is before the first")

    @classmethod
    def parse(cls, key: str) -> DayRange:
        """Parse ``{team_id}_{first}..{last}``, validating each part like a partition key's; a typed range is
        at most :data:`MAX_RANGE_DAYS` days (a run's own data interval — persons' whole history — is not)."""
        match = _RANGE_KEY.fullmatch(key) if isinstance(key, str) else None
        if not match:
            raise PartitionError(f"invalid day range {quoted(key)}: expected {{team_id}}_{{first}}..{{last}}, "
                                 "e.g. 12345_2024-01-01..2024-01-31")
        scope = cls(validate_team_id(int(match.group(1))), parse_day(match.group(2)), parse_day(match.group(3)))
        if (scope.last - scope.first).days + 1 > MAX_RANGE_DAYS:
            raise PartitionError(f"invalid day range {scope.key}: more than {MAX_RANGE_DAYS} days in one run")
        return scope

    @property
    def key(self) -> str:
        return f"{self.team_id}_{self.first.isoformat()}..{self.last.isoformat()}"

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.first, dt.time(), tzinfo=dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """Exclusive UTC end of the last day."""
        return dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)

    @property
    def partitions(self) -> list[Partition]:
        """Each day of the range, oldest first."""
        return [Partition(self.team_id, self.first + dt.timedelta(days=n)) for n in range((self.last - self.first).days + 1)]

    def prefix(self, table: str) -> str:
        """The team's prefix: every day's files of the range lie under it (each under its own day)."""
        return f"backfill/{table}/team_id={self.team_id}/"

    def lake_predicate(self, day_column: str) -> str:
        from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal

        col = duckdb_ident(day_column)
        return (f"team_id = {duckdb_literal(self.team_id)} AND {col} >= {duckdb_literal(self.start)} "
                f"AND {col} < {duckdb_literal(self.end)}")


def days_scope(team_id: int, first: dt.date, last: dt.date) -> Partition | DayRange:
    """One day as a :class:`Partition` (the path and key of a daily run, unchanged), several as a :class:`DayRange`."""
    return Partition(team_id, first) if first == last else DayRange(team_id, first, last)


def key_day(key: str) -> tuple[dt.date, str] | None:
    """(the day, the file name) a partition's object key or URI names (``…/year=YYYY/month=MM/day=DD/name``,
    the layout of :meth:`Partition.prefix`); None for anything else."""
    match = _DAY_IN_KEY.search(key)
    if not match:
        return None
    try:
        return dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3))), match.group(4)
    except ValueError:
        return None


def run_id_part(key: str) -> str:
    """A partition or range key as a run id may hold it: Airflow refuses ``..`` in a run id (path
    traversal), so a range ``12345_2024-01-01..2024-01-31`` becomes ``12345_2024-01-01_to_2024-01-31``."""
    return key.replace("..", "_to_")


def parse_key(key: str) -> Partition | DayRange:
    """A partition key, or a day range key ``{team_id}_{first}..{last}``."""
    if isinstance(key, str) and ".." in key:
        return DayRange.parse(key)
    return Partition.parse(key)


Scope = Partition | FullExport | DayRange
"""What one export/register pair moves: one team-day, a batch of days, or all of a team's rows."""


def run_token(run_id: str, try_number: int | None = None) -> str:
    """A file-name-safe token unique to one attempt of one Airflow run.

    The attempt number is part of it so that a cleared or retried task never overwrites a file the lake
    may already reference: each attempt writes a new object, and the register step swaps it in.
    """
    token = _TOKEN_UNSAFE.sub("_", run_id).strip("._-") or "run"
    if try_number is not None:
        token = f"{token}-try{int(try_number)}"
    return token[:200]


def dag_id_for(table: str, team_id: int) -> str:
    """The DAG that moves ``table`` for one team: ``duckling_{table}_backfill_team_{team_id}``. The DAGs,
    the checks that look at their runs and the repair runs all name a team's DAG through this one rule."""
    return f"duckling_{table}_backfill_team_{team_id}"
