"""The same export SQL runs on the embedded engine (chdb in-process) and on a ClickHouse server over HTTP
(clickhouse-connect), and both write the same Parquet schema and rows."""

from __future__ import annotations

import os

from airflow_provider_duckling.access.extensions import connect_duckdb
from airflow_provider_duckling.demo.sample_data import seed_events
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.scheduling.airflow_env import connection_env
from airflow_provider_duckling.transfer.export import export_partition
from tests.conftest import SESSION_DIR
from tests.support.stack import DAYS


def test_embedded_and_http_clickhouse_write_identical_files(stack):
    name, value = connection_env("clickhouse_embedded", "clickhouse", schema="posthog",
                                 extra={"chdb_path": str(SESSION_DIR / "chdb-embedded")})
    os.environ[name] = value
    embedded, server = ClickHouseHook("clickhouse_embedded"), ClickHouseHook()
    assert embedded.is_embedded and not server.is_embedded
    day = DAYS[0]
    counts = seed_events(embedded, [1], [day])
    assert counts[(1, day)] == stack.counts[(1, day)]

    duckling = stack.new_duckling(1, "parity")
    storage = DuckLakeHook().storage(duckling)
    partition = Partition(1, day)
    from_server = export_partition(server, storage, EVENTS, partition, "http")
    from_embedded = export_partition(embedded, storage, EVENTS, partition, "chdb")
    assert from_server.rows == from_embedded.rows == stack.counts[(1, day)]

    con = connect_duckdb()
    DuckLakeHook._create_s3_secret(con, storage)

    def describe(uri):
        return con.execute("DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = false)", [uri]).fetchall()

    assert describe(from_server.files[0]) == describe(from_embedded.files[0])
    assert [c[0] for c in describe(from_server.files[0])] == list(EVENTS.lake_columns)

    def sample(uri):
        return con.execute(
            "SELECT timestamp, event, distinct_id, properties FROM read_parquet(?, hive_partitioning = false) ORDER BY ALL",
            [uri],
        ).fetchall()

    assert sample(from_server.files[0]) == sample(from_embedded.files[0])

    # A partition split over several files: the same file names and, together, the same rows on both
    # engines, to S3 and, in embedded mode, to a local directory. (Which row lands in which file follows
    # a hash of its uuid, and the two engines' sample data have different random uuids.)
    from airflow_provider_duckling.access.storage import DucklingStorage

    rows = stack.counts[(1, day)]
    parts = -(-rows // 100)
    split_server = export_partition(server, storage, EVENTS, partition, "http-split", rows_per_file=100)
    split_embedded = export_partition(embedded, storage, EVENTS, partition, "chdb-split", rows_per_file=100)
    local = DucklingStorage(duckling.bucket, "us-east-1", local_dir=SESSION_DIR / "parity-local")
    split_local = export_partition(embedded, local, EVENTS, partition, "local-split", rows_per_file=100)
    for result in (split_server, split_embedded, split_local):
        assert len(result.files) == parts and result.rows == rows
        assert [k.rsplit("/", 1)[1] for k in result.object_keys] == [
            f"{result.object_keys[0].rsplit('/', 1)[1].split('-part')[0]}-part{n}.parquet" for n in range(parts)]

    def union(files):
        return sorted(row for uri in files for row in sample(uri))

    assert union(split_server.files) == union(split_embedded.files) == union(split_local.files) == sample(
        from_server.files[0])
