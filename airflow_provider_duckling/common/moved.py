"""Old import paths that still work: a module that moved leaves a shim whose names forward to the new place,
with a ``DeprecationWarning`` (which Airflow shows as a DAG import warning when a DAG file uses the old path)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def forward_module(old: str, new: str) -> Callable[[str], Any]:
    """Warn that ``old`` moved to ``new`` and return a module ``__getattr__`` that reads names from ``new``."""
    moved = importlib.import_module(new)
    warnings.warn(f"{old} moved to {new}: change the import in your DAG file", DeprecationWarning, stacklevel=3)

    def __getattr__(name: str) -> Any:
        return getattr(moved, name)

    return __getattr__
