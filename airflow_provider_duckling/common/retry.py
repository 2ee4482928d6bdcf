"""Retrying what another worker's concurrent transaction made fail.

DuckLake decides commits in its catalog: two snapshots that both delete from one table, two workers that
create one table, or two workers that initialise a brand-new catalog conflict. The loser retries with
exponential backoff and jitter; anything else is raised at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

log = logging.getLogger(__name__)
T = TypeVar("T")

_CONFLICT_MARKERS = ("conflict", "could not serialize", "deadlock", "duplicate key", "concurrent")


def is_conflict(exc: BaseException, extra_markers: tuple[str, ...] = ()) -> bool:
    """True for errors that another transaction caused and a retry can resolve."""
    text = str(exc).lower()
    markers = _CONFLICT_MARKERS + extra_markers
    return isinstance(exc, duckdb.TransactionException) or any(m in text for m in markers)


def retry_conflicts(
    what: str,
    fn: Callable[[], T],
    on_error: Callable[[], None] | None = None,
    attempts: int = 10,
    base_delay: float = 0.1,
    extra_markers: tuple[str, ...] = (),
) -> T:
    """Run ``fn``, retrying DuckDB conflict errors; ``on_error`` cleans up (e.g. ROLLBACK) after each failure."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except duckdb.Error as exc:
            if on_error is not None:
                on_error()
            if not is_conflict(exc, extra_markers) or attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1) * (0.5 + random.random())
            log.info("event=commit_conflict what=%s attempt=%d retry_in=%.2fs", what, attempt, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
