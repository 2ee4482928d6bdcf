"""An embedded (DuckDB-file catalog, local directory) duckling for tests that need a lake but no servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling


def embedded_duckling(tmp_path: Path, monkeypatch: Any, tag: str) -> tuple[DuckLakeHook, Duckling, Path]:
    """A ``ducklake_<tag>`` connection with its lakes under ``tmp_path``, a duckling of team 7 on it, and the
    path of that duckling's catalog file."""
    conn_id = f"ducklake_{tag}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}",
                       json.dumps({"conn_type": "ducklake", "extra": {"local_root": str(tmp_path)}}))
    duckling = Duckling(7, f"{tag}-bucket", "us-east-1", "localhost", f"{tag}_lake", "arn:aws:iam::000000000000:role/x",
                        "x", catalog_conn_id=conn_id)
    return DuckLakeHook(conn_id), duckling, tmp_path / f"{tag}_lake.ducklake"
