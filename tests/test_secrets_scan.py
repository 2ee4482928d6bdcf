"""The secrets scan itself can fail: the suite-wide scan (``tests/support/secrets_scan.py``, run by
``tests/conftest.py`` after every test of every process) finds a secret planted in a captured output and in
an Airflow log file of another process, and reports a clean tree as clean."""

from __future__ import annotations

from tests.support.secrets_scan import scan, write_capture
from tests.support.stack import CATALOG_PASSWORD, CLICKHOUSE_PASSWORD


def test_the_scan_finds_a_secret_in_any_process_s_output_or_logs(tmp_path):
    session_token = "FQoGZXIvYXdzEXAMPLEsessiontoken"
    write_capture(tmp_path / "gw0", ["clean output", "more clean output"], {CATALOG_PASSWORD, session_token})
    write_capture(tmp_path / "gw1", [f"oops {CLICKHOUSE_PASSWORD}"], {CLICKHOUSE_PASSWORD})
    log = tmp_path / "gw0" / "real-scheduler" / "home" / "logs" / "dag_id=x" / "attempt=1.log"
    log.parent.mkdir(parents=True)
    log.write_text(f"token={session_token}\n")

    result = scan(tmp_path)
    assert (result.texts, result.files, result.secrets) == (3, 1, 3)
    assert result.leaks == [("gw0/real-scheduler/home/logs/dag_id=x/attempt=1.log", "FQoGZX…"),
                            ("gw1: captured output", "clickh…")]

    log.write_text("token=***\n")
    write_capture(tmp_path / "gw1", ["oops ***"], {CLICKHOUSE_PASSWORD})
    assert scan(tmp_path).leaks == []
