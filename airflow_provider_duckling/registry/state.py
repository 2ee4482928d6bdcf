"""What the DAG file needs at parse time — the registry and the remembered start dates — read from local
files only, with the last good copy kept so that a broken registry never makes DAGs disappear.

Start dates are discovered by a task (``duckling_discover_start_dates``), never at parse time, and
remembered in a small JSON file beside the registry (``[duckling] state_path``), with when each was last
checked, the days that a later, earlier start still has to back-fill (see
:mod:`~airflow_provider_duckling.scheduling.discovery`), and when each duckling was first seen (which fixes
where its history batches end, :mod:`~airflow_provider_duckling.domain.history`, and when its freshness
alerts begin).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_duckling.common.errors import RegistryError, quoted
from airflow_provider_duckling.registry import settings
from airflow_provider_duckling.registry.catalog import (
    MAX_REGISTRY_BYTES,
    Duckling,
    parse_registry,
    parse_registry_text,
    read_limited_text,
    read_registry_text,
)

log = logging.getLogger(__name__)
StartDates = dict[str, dict[int, dt.date]]
FirstSeen = dict[int, dt.datetime]
"""team → when a discovery pass first found it in the registry (UTC)."""
MAX_STATE_BYTES = MAX_REGISTRY_BYTES
"""The state file's size limit, 16 MiB, checked before reading (the last good copy, which also holds the
registry in JSON form, may be twice that)."""
_TABLE = re.compile(r"[A-Za-z0-9_]{1,64}", re.ASCII)
_TEAM = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _strict_json(text: str) -> Any:
    """``json.loads`` refusing duplicate keys, NaN/Infinity and over-long numbers; deep nesting is a
    ``ValueError`` here rather than a ``RecursionError``."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate key {quoted(key, 30)}")
            out[key] = value
        return out

    def number(kind: type) -> Any:
        def parse(literal: str) -> Any:
            if len(literal) > 30:
                raise ValueError("number too long")
            return kind(literal)
        return parse

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_int=number(int), parse_float=number(float),
                          parse_constant=constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _encode(start_dates: StartDates) -> dict[str, dict[str, str]]:
    return {table: {str(t): d.isoformat() for t, d in sorted(days.items())} for table, days in sorted(start_dates.items())}


def _decode(raw: Any, source: str) -> StartDates:
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: expected a mapping of table → team → date")
    out: StartDates = {}
    for table, days in raw.items():
        if not isinstance(table, str) or not _TABLE.fullmatch(table):
            raise RegistryError(f"{source}: invalid table name {quoted(table)}")
        if not isinstance(days, dict):
            raise RegistryError(f"{source}: {quoted(table)}: expected a mapping of team → date")
        decoded = out[table] = {}
        for team, day in days.items():
            if not isinstance(team, str) or not _TEAM.fullmatch(team) or int(team) >= 2**63:
                raise RegistryError(f"{source}: {quoted(table)}: invalid team id {quoted(team)}")
            try:
                if not isinstance(day, str) or not _DAY.fullmatch(day):
                    raise ValueError
                decoded[int(team)] = dt.date.fromisoformat(day)
            except ValueError:
                raise RegistryError(f"{source}: {quoted(table)}: team {team}: invalid date {quoted(day)}") from None
    return out


def _encode_seen(first_seen: FirstSeen) -> dict[str, str]:
    return {str(t): when.astimezone(dt.UTC).isoformat(timespec="seconds") for t, when in sorted(first_seen.items())}


def _decode_seen(raw: Any, source: str) -> FirstSeen:
    """``{team: ISO time}``, validated like the start dates (a time without a zone is refused)."""
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: first_seen: expected a mapping of team → time")
    out: FirstSeen = {}
    for team, when in raw.items():
        if not isinstance(team, str) or not _TEAM.fullmatch(team) or int(team) >= 2**63:
            raise RegistryError(f"{source}: first_seen: invalid team id {quoted(team)}")
        try:
            if not isinstance(when, str) or len(when) > 40 or not _DAY.match(when):
                raise ValueError
            parsed = dt.datetime.fromisoformat(when)
            if parsed.tzinfo is None:
                raise ValueError
        except ValueError:
            raise RegistryError(f"{source}: first_seen: team {team}: invalid time {quoted(when)}") from None
        out[int(team)] = parsed.astimezone(dt.UTC)
    return out


def _read_state(path: Path) -> dict[str, Any]:
    text = read_limited_text(path, "remembered start dates", limit=MAX_STATE_BYTES)
    if text is None:
        return {}
    try:
        raw = _strict_json(text)
    except ValueError as exc:  # JSONDecodeError is one; its message is position-only, never the content
        problem = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise RegistryError(f"cannot read remembered start dates {path.name}: {problem[:80]}") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"{path.name}: expected a JSON object")
    return raw


def load_start_dates(path: Path | None = None) -> StartDates:
    """Remembered start dates; a missing file means none discovered yet."""
    path = path or settings.state_path()
    return _decode(_read_state(path).get("start_dates", {}), path.name)


def load_parse_state(path: Path | None = None) -> tuple[StartDates, FirstSeen]:
    """What the DAG file reads of the state: the start dates and when each duckling was first seen."""
    path = path or settings.state_path()
    raw = _read_state(path)
    return _decode(raw.get("start_dates", {}), path.name), _decode_seen(raw.get("first_seen", {}), path.name)


def remember_start_dates(found: StartDates, path: Path | None = None) -> StartDates:
    """Merge newly discovered dates into the state file (earlier dates win) and return the result."""
    path = path or settings.state_path()
    state = load_discovery_state(path)
    for table, days in found.items():
        for team, day in days.items():
            current = state.start_dates.setdefault(table, {}).get(team)
            state.start_dates[table][team] = min(day, current) if current else day
    save_discovery_state(state, path)
    return state.start_dates


BackfillRanges = dict[str, dict[int, tuple[dt.date, dt.date]]]
"""table → team → ``(first, end)``: the days ``first`` ≤ D < ``end`` that rediscovery found before a
team's previous start and that still need runs of their own (catch-up never goes back)."""


@dataclass
class DiscoveryState:
    """Everything discovery remembers: the start dates (all the DAG file reads), when each team's start was
    last checked in ClickHouse, and the rediscovered days still to back-fill."""

    start_dates: StartDates = field(default_factory=dict)
    checked: StartDates = field(default_factory=dict)
    backfill: BackfillRanges = field(default_factory=dict)
    first_seen: FirstSeen = field(default_factory=dict)

    def see(self, team_ids: list[int] | set[int], now: dt.datetime) -> bool:
        """Record ``now`` for teams not seen before and forget teams gone from the registry (one that
        comes back is new again); True when anything changed."""
        wanted = set(team_ids)
        gone = [t for t in self.first_seen if t not in wanted]
        new = [t for t in wanted if t not in self.first_seen]
        for team in gone:
            del self.first_seen[team]
        for team in new:
            self.first_seen[team] = now.astimezone(dt.UTC).replace(microsecond=0)
        return bool(gone or new)

    def add_backfill(self, table: str, team: int, first: dt.date, end: dt.date) -> tuple[dt.date, dt.date]:
        """Add the days ``[first, end)`` to the team's pending range (one range: the span of both)."""
        current = self.backfill.setdefault(table, {}).get(team)
        merged = (min(first, current[0]), max(end, current[1])) if current else (first, end)
        self.backfill[table][team] = merged
        return merged


def _decode_ranges(raw: Any, source: str) -> BackfillRanges:
    """Decode ``{table: {team: [first, end]}}``, validated like the start dates (each half is one)."""
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: backfill: expected a mapping of table → team → [first, end]")
    firsts: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    for table, teams in raw.items():
        if not isinstance(teams, dict):
            raise RegistryError(f"{source}: backfill: {quoted(table)}: expected a mapping of team → [first, end]")
        for team, pair in teams.items():
            if not isinstance(pair, list) or len(pair) != 2:
                raise RegistryError(f"{source}: backfill: {quoted(table)}: team {quoted(team)}: expected [first, end]")
            firsts.setdefault(table, {})[team], ends.setdefault(table, {})[team] = pair
    first_days, end_days = _decode(firsts, f"{source}: backfill"), _decode(ends, f"{source}: backfill")
    return {table: {team: (first, end_days[table][team]) for team, first in teams.items()
                    if first < end_days[table][team]}
            for table, teams in first_days.items()}


def load_discovery_state(path: Path | None = None) -> DiscoveryState:
    """The whole state file (missing: nothing discovered yet); invalid content is one clear error."""
    path = path or settings.state_path()
    raw = _read_state(path)
    return DiscoveryState(
        _decode(raw.get("start_dates", {}), path.name),
        _decode(raw.get("checked", {}), f"{path.name}: checked"),
        _decode_ranges(raw.get("backfill", {}), path.name),
        _decode_seen(raw.get("first_seen", {}), path.name),
    )


def save_discovery_state(state: DiscoveryState, path: Path | None = None) -> None:
    """Write the state file atomically (a reader sees the old or the new file, never half of one)."""
    path = path or settings.state_path()
    document: dict[str, Any] = {"start_dates": _encode(state.start_dates)}
    if any(state.checked.values()):
        document["checked"] = _encode(state.checked)
    ranges = {table: {str(t): [a.isoformat(), b.isoformat()] for t, (a, b) in sorted(teams.items())}
              for table, teams in sorted(state.backfill.items()) if teams}
    if ranges:
        document["backfill"] = ranges
    if state.first_seen:
        document["first_seen"] = _encode_seen(state.first_seen)
    _atomic_write(path, json.dumps(document, indent=1))


@dataclass
class DagInputs:
    """The registry and start dates the DAG file builds from, and any problem reading them."""

    ducklings: dict[int, Duckling]
    start_dates: StartDates
    problems: list[str] = field(default_factory=list)
    first_seen: FirstSeen = field(default_factory=dict)


def load_dag_inputs(
    registry_path: Path | None = None, state_path: Path | None = None, last_good_path: Path | None = None
) -> DagInputs:
    """Read registry and start dates; on failure keep the last good copy and report the problem.

    The last good copy also records the SHA-256 of the registry text it was parsed from: while the file
    is unchanged, its already validated JSON form is read instead of the YAML (5,000 teams: 0.1 s instead
    of 0.8 s of CPU, in every DAG file at every parse; ``bench/p3_dag_parse.py``)."""
    last_good_path = last_good_path or settings.last_good_path()
    registry_path = registry_path or settings.registry_path()
    last_good = _read_last_good(last_good_path)
    problems: list[str] = []
    digest = None
    try:
        text = read_registry_text(registry_path)
        digest = hashlib.sha256(text.encode()).hexdigest() if text is not None else None
        ducklings = _cached_registry(last_good, digest) if digest else None
        if ducklings is None:
            ducklings = parse_registry_text(text, registry_path)
    except RegistryError as exc:
        problems.append(str(exc))
        ducklings = None
    first_seen: FirstSeen | None = None
    try:
        start_dates, first_seen = load_parse_state(state_path)
    except RegistryError as exc:
        problems.append(str(exc))
        start_dates = None
    if ducklings is not None and start_dates is not None and first_seen is not None:
        _save_last_good(last_good_path, last_good, ducklings, start_dates, digest, first_seen)
        return DagInputs(ducklings, start_dates, first_seen=first_seen)
    good = _decode_last_good(last_good)
    for problem in problems:
        log.error("event=registry_problem keeping the last good DAGs: %s", problem)
    return DagInputs(
        ducklings if ducklings is not None else good.ducklings,
        start_dates if start_dates is not None else good.start_dates,
        problems,
        first_seen if first_seen is not None else good.first_seen,
    )


def _read_last_good(path: Path) -> dict[str, Any] | None:
    try:
        text = read_limited_text(path, "last good copy", limit=2 * MAX_STATE_BYTES)
        raw = _strict_json(text) if text is not None else None
    except (RegistryError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _cached_registry(last_good: dict[str, Any] | None, digest: str) -> dict[int, Duckling] | None:
    """The last good registry when it was parsed from exactly this text (re-validated), else ``None``."""
    if not last_good or last_good.get("registry_sha256") != digest:
        return None
    try:
        return parse_registry(last_good, "last good registry")
    except RegistryError:  # written by a version that validated differently: parse the file itself
        return None


def _save_last_good(
    path: Path, last_good: dict[str, Any] | None, ducklings: dict[int, Duckling], start_dates: StartDates,
    digest: str | None, first_seen: FirstSeen | None = None,
) -> None:
    encoded = _encode(start_dates)
    seen = _encode_seen(first_seen or {})
    if (last_good and "registry_sha256" in last_good and last_good["registry_sha256"] == digest
            and last_good.get("start_dates") == encoded and last_good.get("first_seen", {}) == seen):
        return  # parsed from the same text, same state: nothing to write
    document = {"ducklings": [d.to_dict() for d in ducklings.values()], "start_dates": encoded, "registry_sha256": digest,
                "first_seen": seen}
    try:
        _atomic_write(path, json.dumps(document, indent=1, sort_keys=True))
    except OSError as exc:  # the cache is a convenience; never fail parsing over it
        log.warning("event=last_good_not_saved path=%s error=%s", path, type(exc).__name__)


def _decode_last_good(raw: dict[str, Any] | None) -> DagInputs:
    try:
        return DagInputs(parse_registry(raw, "last good registry"), _decode((raw or {}).get("start_dates", {}), "last good state"),
                         first_seen=_decode_seen((raw or {}).get("first_seen", {}), "last good state"))
    except (AttributeError, TypeError, ValueError, RegistryError):
        return DagInputs({}, {})
