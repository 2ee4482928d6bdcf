"""Shared helpers for the benchmarks: the test suite's real engines (PostgreSQL, moto S3/STS, chdb behind
ClickHouse's HTTP interface) started on free loopback ports in a temp dir, and the tables they print.

Importing this module puts the repository root on ``sys.path`` (so ``tests.support`` imports when a script
is run as ``.venv/bin/python bench/pN_….py``) and points Airflow at a throwaway home *before* anything
imports ``airflow``, so a benchmark never touches ``~/airflow``.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")


def workdir(prefix: str) -> Path:
    """A temp dir for one benchmark run (others may read it: PostgreSQL runs as its own user)."""
    path = Path(tempfile.mkdtemp(prefix=f"duckling-{prefix}-"))
    os.chmod(path, 0o755)
    return path


def airflow_home(root: Path) -> dict[str, str]:
    """Environment of an isolated Airflow home under ``root`` (set before ``airflow`` is imported)."""
    home = root / "airflow"
    home.mkdir(exist_ok=True)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


@dataclass
class BenchStack:
    """The running engines and the ``tests.support.stack.Stack`` that makes ducklings on them."""

    root: Path
    stack: object  # tests.support.stack.Stack
    env: dict[str, str] = field(default_factory=dict)

    def new_duckling(self, team_id: int, tag: str):
        """A fresh duckling (own bucket and PostgreSQL catalog database) for ``team_id``."""
        return self.stack.new_duckling(team_id, tag)


@contextmanager
def engines(root: Path, *, clickhouse: bool = True) -> Iterator[BenchStack]:
    """PostgreSQL + moto (+ the chdb HTTP server) in ``root``; connection variables set in ``os.environ``.

    Everything started here is stopped on exit, whatever happens.
    """
    from tests.support.services import start_moto, start_postgres
    from tests.support.stack import CATALOG_PASSWORD, CATALOG_USER, CLICKHOUSE_PASSWORD, Stack

    with ExitStack() as cleanup:
        postgres = start_postgres(root / "pg", CATALOG_USER, CATALOG_PASSWORD)
        cleanup.callback(postgres.stop, "immediate")
        moto = start_moto(root / "moto")
        cleanup.callback(moto.stop)
        port = pid = 0
        if clickhouse:
            from tests.support.chdb_http_server import start_chdb_http_server

            server = start_chdb_http_server(root / "chdb", password=CLICKHOUSE_PASSWORD)
            cleanup.callback(server.stop)
            port, pid = server.port, server.process.pid
        stack = Stack(root, root / "ducklings.yaml", postgres, moto, port, pid)
        env = stack.connection_env()
        os.environ.update(env)
        yield BenchStack(root, stack, env)


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def print_measured(prefix: str, measure, *args) -> None:
    """Start the engines in a fresh temp dir (Airflow home included), print ``measure(bench, *args)``,
    and remove everything afterwards."""
    root = workdir(prefix)
    try:
        os.environ.update(airflow_home(root))
        with engines(root) as bench:
            print(measure(bench, *args))
    finally:
        remove(root)


# ---------------------------------------------------------------- timing what our code sends


class Timed:
    """Wraps a DuckDB connection or a ClickHouseHook: each ``execute``/``query_rows`` call is timed and added
    up per statement shape, so a benchmark can say which statement its time goes to."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.times: dict[str, float] = defaultdict(float)

    def _timed(self, method: str, sql: str, *args, **kwargs):
        start = time.perf_counter()
        try:
            return getattr(self._inner, method)(sql, *args, **kwargs)
        finally:
            self.times[shape(sql)] += time.perf_counter() - start

    def execute(self, sql: str, *args, **kwargs):
        return self._timed("execute", sql, *args, **kwargs)

    def query_rows(self, sql: str, *args, **kwargs):
        return self._timed("query_rows", sql, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def shape(sql: str, width: int = 100) -> str:
    """A statement with its literals and numbers blanked, so repetitions of it add up."""
    sql = re.sub(r"'(?:[^']|'')*'", "'…'", sql)
    sql = re.sub(r"\b\d+\b", "N", sql)
    sql = re.sub(r"\(\s*(?:N|\$N|'…')(?:\s*,\s*(?:N|\$N|'…'))+\s*\)", "(…)", sql)
    sql = re.sub(r"\s+", " ", sql).strip()
    return sql if len(sql) <= width else sql[: width - 1] + "…"


# ---------------------------------------------------------------- reporting


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(ratio: float, goal: float) -> str:
    return "PASS" if ratio <= goal else "MISS"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(row):
            numeric = bool(re.fullmatch(r"[-+]?[\d,.]+\s*\S*", cell)) and i > 0
            out.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])
