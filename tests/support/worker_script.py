"""A stand-in worker process for the SIGKILL tests: export one partition, say so, then register it.

    python -m tests.support.worker_script TEAM DAY TOKEN [--pause-after-export SECONDS]
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import get_duckling
from airflow_provider_duckling.transfer.export import export_partition
from airflow_provider_duckling.transfer.lake import register_files


def main() -> None:
    team, day, token = int(sys.argv[1]), dt.date.fromisoformat(sys.argv[2]), sys.argv[3]
    pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    duckling = get_duckling(team)
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    partition = Partition(team, day)
    exported = export_partition(ClickHouseHook(), storage, EVENTS, partition, token)
    print("EXPORTED", flush=True)
    time.sleep(pause)
    with hook.attach(duckling, storage) as con:
        print("REGISTERING", flush=True)
        register_files(con, EVENTS, partition, exported.files, exported.rows, storage.data_path)
    print("REGISTERED", flush=True)


if __name__ == "__main__":
    main()
