"""Test session: real engines on loopback, started here, and an isolated Airflow home.

Airflow reads its configuration when first imported, so its environment is set at the top of this
module, before any test module imports ``airflow``.

The suite runs in parallel processes (``pytest -n 2``, pytest-xdist, one test file per process at a time):
each process has its own session folder below one root the controlling process creates, its own engines
and its own Airflow home. The secrets scan runs once, in the controlling process, after every process ended.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_duckling.scheduling.airflow_env import airflow_environment, migrate_db

# One root for the whole run, made by the first process (the controller under xdist) and inherited by the
# worker processes it starts; each process works in its own folder below it. World-readable: the suite's
# PostgreSQL runs as an unprivileged user.
if "DUCKLING_TEST_ROOT" not in os.environ:
    os.environ["DUCKLING_TEST_ROOT"] = tempfile.mkdtemp(prefix="duckling-tests-")
    os.environ["DUCKLING_TEST_ROOT_OWNER"] = str(os.getpid())
TEST_ROOT = Path(os.environ["DUCKLING_TEST_ROOT"])
os.chmod(TEST_ROOT, 0o755)
SESSION_DIR = TEST_ROOT / os.environ.get("PYTEST_XDIST_WORKER", "main")
SESSION_DIR.mkdir(exist_ok=True)
os.chmod(SESSION_DIR, 0o755)
REGISTRY = SESSION_DIR / "ducklings.yaml"
AIRFLOW_ENV = airflow_environment(SESSION_DIR / "airflow", REGISTRY)
(SESSION_DIR / "airflow").mkdir()
os.environ.update(AIRFLOW_ENV)
os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "120")
# Transient failures retry after 1 s, 2 s, 4 s in tests instead of minutes (the default stays 120 s).
os.environ["AIRFLOW__DUCKLING__RETRY_DELAY_SECONDS"] = "1"


def _owns_root() -> bool:
    return os.environ.get("DUCKLING_TEST_ROOT_OWNER") == str(os.getpid())


def pytest_unconfigure(config: pytest.Config) -> None:
    if _owns_root():
        shutil.rmtree(TEST_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """An Airflow metadata DB (SQLite) for dag.test()."""
    migrate_db(AIRFLOW_ENV)


@pytest.fixture(scope="session")
def stack(airflow_db: None) -> Iterator[object]:
    """PostgreSQL + moto + chdb-over-HTTP, seeded with 3 teams × 5 days of events (plus another team's)."""
    from airflow_provider_duckling.demo.sample_data import seed_events
    from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
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
    STACKS.append(stack)
    os.environ.update(stack.connection_env())
    try:
        stack.counts = seed_events(ClickHouseHook(), [*TEAMS, OTHER_TEAM], DAYS)
        yield stack
    finally:
        clickhouse.stop()
        moto.stop()
        postgres.stop("immediate")


@pytest.fixture(scope="module", autouse=True)
def _registry_per_file() -> Iterator[None]:
    """Each test file starts with an empty registry: the files run in two processes in an order that varies,
    so what one file leaves in its process's registry (an entry whose connection went with its test) must
    not reach the next file's DAGs. Within a file, entries accumulate as the file's tests make them."""
    for stack in STACKS:
        stack.use()
    yield


# ---------------------------------------------------------------- secrets scan
# Every test's captured output (stdout, stderr, log records) and failure text is kept here; each process
# writes it, with the secrets it knows, when it ends, and the controlling process scans every process's
# part and every log file the suite's Airflow components wrote (tests/support/secrets_scan.py).
CAPTURED_OUTPUT: list[str] = []
STACKS: list[object] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") is None and _is_controller_of_workers():
        return  # the controller also sees its workers' reports; each worker keeps its own
    for _, content in report.sections:
        CAPTURED_OUTPUT.append(content)
    if report.longrepr:
        CAPTURED_OUTPUT.append(str(report.longrepr))


_WORKERS: list[int] = []


def _is_controller_of_workers() -> bool:
    return bool(_WORKERS)


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        _WORKERS.append(1)


def _known_secrets() -> set[str]:
    from airflow_provider_duckling.common import redaction
    from tests.support.stack import BASE_AWS_KEY_ID, BASE_AWS_SECRET, CATALOG_PASSWORD, CLICKHOUSE_PASSWORD

    secrets = {CATALOG_PASSWORD, CLICKHOUSE_PASSWORD, BASE_AWS_SECRET, BASE_AWS_KEY_ID}
    secrets |= {d.cross_account_external_id for stack in STACKS for d in stack.all_ducklings}
    secrets |= set(redaction._secrets)  # every session key, secret and token assumed in this process
    return secrets if STACKS else set()


_SCAN_LINE: list[tuple[str, bool]] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.support.secrets_scan import scan, write_capture

    if not _is_controller_of_workers():
        write_capture(SESSION_DIR, CAPTURED_OUTPUT, _known_secrets())
    if not _owns_root():
        return
    result = scan(TEST_ROOT)
    if result.secrets == 0:
        _SCAN_LINE.append(("secrets scan: no test used the stack, nothing to look for", True))
        return
    # Every process that used the stack knows its four passwords and keys: fewer means a part went unread.
    failed = bool(result.leaks) or result.secrets < 4
    line = (f"secrets scan: {result.secrets} secrets in {result.texts} captured outputs and {result.files} "
            f"Airflow log files: " + (f"LEAKED {result.leaks[:20]}" if result.leaks else "clean"))
    _SCAN_LINE.append((line + (" (too few secrets: a process's part was not read)" if result.secrets < 4 else ""),
                       not failed))
    if failed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line, ok in _SCAN_LINE:
        terminalreporter.write_sep("-", line, green=ok, red=not ok)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with slow tests first (stable otherwise): with one file per process at a time, the long files
    start at once and the short ones fill the gaps, so the two processes end close together."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
    for item in items:
        uses_stack = "stack" in getattr(item, "fixturenames", ())
        if uses_stack:
            item.add_marker(pytest.mark.stack)
        # The pre-commit loop (`make quick`): every test that needs no server, and the few server tests marked
        # `quick` in their files, chosen so that every module of the package runs.
        if item.get_closest_marker("quick") or not (uses_stack or item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.quick)
