"""Test session: real engines on loopback, started here, and an isolated Airflow home.

Airflow reads its configuration when first imported, so its environment is set at the top of this
module, before any test module imports ``airflow``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_duckling.airflow_env import airflow_environment, migrate_db

SESSION_DIR = Path(tempfile.mkdtemp(prefix="duckling-tests-"))
os.chmod(SESSION_DIR, 0o755)
REGISTRY = SESSION_DIR / "ducklings.yaml"
AIRFLOW_ENV = airflow_environment(SESSION_DIR / "airflow", REGISTRY)
(SESSION_DIR / "airflow").mkdir()
os.environ.update(AIRFLOW_ENV)
os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "120")
# Transient failures retry after 1 s, 2 s, 4 s in tests instead of minutes (the default stays 120 s).
os.environ["AIRFLOW__DUCKLING__RETRY_DELAY_SECONDS"] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """An Airflow metadata DB (SQLite) for dag.test()."""
    migrate_db(AIRFLOW_ENV)


@pytest.fixture(scope="session")
def stack(airflow_db: None) -> Iterator[object]:
    """PostgreSQL + moto + chdb-over-HTTP, seeded with 3 teams × 5 days of events (plus another team's)."""
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
    from airflow_provider_duckling.sample_data import seed_events
    from tests.support.chdb_http_server import start_chdb_http_server
    from tests.support.services import start_moto, start_postgres
    from tests.support.stack import (
        CATALOG_PASSWORD,
        CATALOG_USER,
        CLICKHOUSE_PASSWORD,
        DAYS,
        OTHER_TEAM,
        TEAMS,
        Stack,
    )

    postgres = start_postgres(SESSION_DIR / "pg", CATALOG_USER, CATALOG_PASSWORD)
    moto = start_moto(SESSION_DIR / "moto")
    clickhouse = start_chdb_http_server(SESSION_DIR / "chdb", password=CLICKHOUSE_PASSWORD)
    stack = Stack(SESSION_DIR, REGISTRY, postgres, moto, clickhouse.port, clickhouse.process.pid)
    os.environ.update(stack.connection_env())
    try:
        stack.counts = seed_events(ClickHouseHook(), [*TEAMS, OTHER_TEAM], DAYS)
        yield stack
    finally:
        clickhouse.stop()
        moto.stop()
        postgres.stop("immediate")


# ---------------------------------------------------------------- secrets scan
# Every test's captured output (stdout, stderr, log records) and failure text is kept here; the last test
# (tests/test_zz_secrets.py) scans it, and every log file the suite's Airflow components wrote, for the
# recognisable test secrets.
CAPTURED_OUTPUT: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for _, content in report.sections:
        CAPTURED_OUTPUT.append(content)
    if report.longrepr:
        CAPTURED_OUTPUT.append(str(report.longrepr))
