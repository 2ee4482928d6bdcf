"""Partitions: one team's data for one UTC day, their keys and where their files live.

A partition key is ``{team_id}_{YYYY-MM-DD}`` (the original system's format). Object keys follow
``backfill/{table}/team_id={team_id}/year={YYYY}/month={MM}/day={DD}/{run_token}.parquet``.
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
_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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


Scope = Partition | FullExport
"""What one export/register pair moves: one team-day, or all of a team's rows."""


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
