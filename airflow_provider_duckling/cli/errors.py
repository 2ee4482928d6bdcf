"""Exit codes of the ``duckling`` command, and the error that means "you asked for something impossible"."""

from __future__ import annotations

OK = 0
PROBLEMS = 1
"""A check found problems, a run failed, or a dependency could not be reached."""
USAGE = 2
"""Bad arguments or input (a key, a team, a registry entry): nothing was done."""


class UsageError(Exception):
    """Refused before doing anything: the message says what to change."""


class RunNotStarted(Exception):
    """Airflow could not create the run (e.g. the DAG is not parsed yet): exit 1, the input itself was fine."""
