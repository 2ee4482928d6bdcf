"""The suite-wide secrets scan: every test's captured output and failure text, and every log file the suite's
Airflow components wrote, searched for the recognisable test secrets.

The suite runs in several processes (pytest-xdist): each one writes what it captured and the secrets it
knows (the stack's passwords and keys, each duckling's external id, every assumed session's key, secret and
token) to ``{root}/{worker}/scan.json`` when it ends; the controlling process then scans all of them,
after every test of every process has run (``tests/conftest.py``), and fails the run on a leak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SCAN_FILE = "scan.json"
#: Where a process's Airflow components write logs, below its session folder.
LOG_ROOTS = ("airflow", "real-scheduler")


@dataclass(frozen=True)
class ScanResult:
    texts: int
    files: int
    secrets: int
    leaks: list[tuple[str, str]]


def write_capture(session_dir: Path, outputs: list[str], secrets: set[str]) -> None:
    """One process's part of the scan."""
    session_dir.mkdir(parents=True, exist_ok=True)
    (session_dir / SCAN_FILE).write_text(json.dumps({"outputs": outputs, "secrets": sorted(secrets)}))


def log_files(session_dir: Path) -> list[Path]:
    roots = [session_dir / name for name in LOG_ROOTS]
    return [p for root in roots if root.exists() for p in root.rglob("*")
            if p.is_file() and (p.suffix == ".log" or "logs" in p.parts)]


def scan(root: Path) -> ScanResult:
    """Search every process's captured texts and log files under ``root`` for every process's secrets."""
    secrets: set[str] = set()
    texts: list[tuple[str, str]] = []
    files = 0
    for capture in sorted(root.glob(f"*/{SCAN_FILE}")):
        data = json.loads(capture.read_text())
        secrets |= {s for s in data["secrets"] if s and len(s) >= 8}
        texts += [(f"{capture.parent.name}: captured output", text) for text in data["outputs"]]
        for path in log_files(capture.parent):
            texts.append((str(path.relative_to(root)), path.read_text(errors="replace")))
            files += 1
    leaks = sorted({(where, secret[:6] + "…") for where, text in texts for secret in secrets if secret in text})
    return ScanResult(len(texts) - files, files, len(secrets), leaks)
