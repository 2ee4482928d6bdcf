"""Keeping the garbage collector's full passes to what a task allocates.

A task process holds everything Airflow, the DAG file and their imports created before the task starts:
about 160,000 tracked objects here. Building botocore's client allocates enough to set off a full
collection, which walks all of them (50–80 ms on 2 cores; ``bench/p2_export_wall.py`` measures it).
Frozen (``gc.freeze``), those objects are left out of every collection while the task runs. They are
unfrozen afterwards, so a process that runs several tasks (``dag.test()`` runs them in the caller's
process) collects its garbage as before.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """While the block runs, the garbage collector ignores every object that existed when it began."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
