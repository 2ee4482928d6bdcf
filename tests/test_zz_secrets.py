"""Secrets stay secret: after the whole suite ran with recognisable test secrets (catalog password,
ClickHouse password, base AWS keys, assumed-role session credentials, external ids), no task log,
exception message or Airflow log line contains any of them. Runs last (file name)."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_duckling import redaction
from tests.conftest import CAPTURED_OUTPUT, SESSION_DIR
from tests.support.stack import BASE_AWS_KEY_ID, BASE_AWS_SECRET, CATALOG_PASSWORD, CLICKHOUSE_PASSWORD


def _log_files() -> list[Path]:
    roots = [SESSION_DIR / "airflow", SESSION_DIR / "real-scheduler"]
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()
            and (p.suffix == ".log" or "logs" in p.parts)]


def test_no_secret_appears_in_any_log_or_error(stack):
    secrets = {CATALOG_PASSWORD, CLICKHOUSE_PASSWORD, BASE_AWS_SECRET, BASE_AWS_KEY_ID}
    secrets |= {d.cross_account_external_id for d in stack.all_ducklings}
    secrets |= set(redaction._secrets)  # every session key, secret and token assumed in this process
    secrets = {s for s in secrets if s and len(s) >= 8}
    assert len(secrets) >= 8, "the scan needs real secrets to look for"

    files = _log_files()
    texts = [("captured output", text) for text in CAPTURED_OUTPUT]
    texts += [(str(p.relative_to(SESSION_DIR)), p.read_text(errors="replace")) for p in files]
    assert len(CAPTURED_OUTPUT) > 10, "nothing was scanned"
    leaks = sorted({(where, secret[:6] + "…") for where, text in texts for secret in secrets if secret in text})
    assert not leaks, f"secrets found in logs: {leaks[:20]}"
