"""A registration in a fresh process, as a task runs it, imports no dataframe library: binding a Python value
in DuckDB's client imports pandas and numpy (about 0.2 s and 75 MiB per task), so the package hands DuckDB
literals instead (``quoting.duckdb_literal``)."""

from __future__ import annotations

import json
import subprocess
import sys

from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.export import export_partition
from tests.support.stack import DAYS

REGISTER = """
import json, sys
from airflow_provider_duckling.registry.catalog import Duckling
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.lake import register_files
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
import datetime as dt

job = json.loads(sys.argv[1])
duckling = Duckling.from_dict(job["duckling"])
hook = DuckLakeHook()
storage = hook.storage(duckling)  # assumes the role: the S3 secret and the catalog secret hold its values
with hook.attach(duckling, storage) as con:
    result = register_files(con, EVENTS, Partition(duckling.team_id, dt.date.fromisoformat(job["day"])),
                            job["files"], job["rows"], storage.data_path)
print(json.dumps({"rows": result.rows, "loaded": sorted(m for m in ("pandas", "numpy") if m in sys.modules)}))
"""


def test_a_registration_in_a_fresh_process_imports_no_dataframe_library(stack):
    duckling = stack.new_duckling(1, "imports")
    exported = export_partition(ClickHouseHook(), DuckLakeHook().storage(duckling), EVENTS, Partition(1, DAYS[0]), "imports")
    job = {"duckling": duckling.to_dict(), "day": DAYS[0].isoformat(), "files": exported.files, "rows": exported.rows}
    done = subprocess.run([sys.executable, "-c", REGISTER, json.dumps(job, default=str)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {"rows": stack.counts[(1, DAYS[0])], "loaded": []}
