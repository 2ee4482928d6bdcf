"""A large team-day is exported as several files of a bounded number of rows by one statement and
registered in one transaction; a tiny day stays one file. Real ClickHouse (HTTP), moto S3, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import logging

import pyarrow.parquet as pq
import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from tests.support.runs import logged_text, run, snapshot_id

TEAM = 82
SMALL_DAY, BIG_DAY = dt.date(2024, 4, 1), dt.date(2024, 4, 2)
BIG_ROWS, ROWS_PER_FILE = 25_000, 10_000


@pytest.fixture(scope="module")
def seeded(stack):
    insert_events(ClickHouseHook(), TEAM, SMALL_DAY, 40)
    insert_events(ClickHouseHook(), TEAM, BIG_DAY, BIG_ROWS)


@pytest.fixture
def duckling(stack, seeded, monkeypatch, request):
    monkeypatch.setenv("AIRFLOW__DUCKLING__ROWS_PER_FILE", str(ROWS_PER_FILE))
    return stack.new_duckling(TEAM, "large" + request.node.name[5:15].replace("_", "-"), start_date=SMALL_DAY)


def _file_rows(stack, duckling, day) -> dict[str, int]:
    """Rows of each object under the day's prefix, read from each Parquet footer."""
    prefix = Partition(TEAM, day).prefix("events")
    out = {}
    for key in stack.keys(duckling.bucket, prefix):
        body = stack.s3().get_object(Bucket=duckling.bucket, Key=key)["Body"].read()
        out[key.removeprefix(prefix)] = pq.ParquetFile(io.BytesIO(body)).metadata.num_rows
    return out


def _live_files(duckling, day) -> list[str]:
    prefix = Partition(TEAM, day).prefix("events")
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        files = con.execute("SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall()
    return sorted(f.rsplit("/", 1)[1] for (f,) in files if prefix in f)


def test_a_large_day_becomes_bounded_files_in_one_transaction(stack, duckling, caplog, capfd):
    caplog.set_level(logging.INFO)
    assert run(TEAM, SMALL_DAY).state == "success"
    (small,) = _file_rows(stack, duckling, SMALL_DAY).items()
    assert small[1] == 40 and "-part" not in small[0]  # a tiny day stays one plain file

    before = snapshot_id(duckling)
    assert run(TEAM, BIG_DAY).state == "success"
    files = _file_rows(stack, duckling, BIG_DAY)
    assert len(files) == 3 and all("-part" in name for name in files)
    assert sum(files.values()) == BIG_ROWS
    assert all(0 < rows <= ROWS_PER_FILE for rows in files.values()), files
    assert _live_files(duckling, BIG_DAY) == sorted(files)
    assert snapshot_id(duckling) == before + 1  # all three registered by one commit
    assert lake_day_counts(duckling, "events") == {SMALL_DAY: 40, BIG_DAY: BIG_ROWS}
    text = logged_text(caplog, capfd)
    key = f"{TEAM}_{BIG_DAY.isoformat()}"
    assert f"event=export_started partition={key} table=events" in text and "files_planned=3" in text
    assert f"event=export_finished partition={key} table=events rows={BIG_ROWS}" in text and "files=3" in text
    assert f"event=partition_registered partition={key} table=events files=3 rows={BIG_ROWS}" in text

    # A re-run swaps in a new set of files: the old three stay in S3 but are no longer referenced.
    first = set(files)
    assert run(TEAM, BIG_DAY).state == "success"
    live = _live_files(duckling, BIG_DAY)
    assert len(live) == 3 and not set(live) & first
    assert lake_day_counts(duckling, "events")[BIG_DAY] == BIG_ROWS


def test_rows_per_file_must_be_a_positive_whole_number(stack, duckling):
    from airflow_provider_duckling.common.errors import ConfigurationError
    from airflow_provider_duckling.operators.clickhouse_to_s3 import ClickHouseToDucklingS3Operator
    from airflow_provider_duckling.transfer.export import planned_files

    assert [planned_files(n, 10) for n in (0, 1, 10, 11, 95)] == [1, 1, 1, 2, 10]
    assert planned_files(10**12, 1) == 256  # bounded: each file is a ClickHouse writer held open
    for bad in ("0", "-5", "ten", True, "1e6"):
        task = ClickHouseToDucklingS3Operator(task_id="export", team_id=TEAM, day=BIG_DAY.isoformat(), rows_per_file=bad)
        with pytest.raises(ConfigurationError, match="rows_per_file must be a whole number"):
            task._rows_per_file()


def test_an_empty_day_is_one_empty_file(stack, duckling):
    empty = dt.date(2024, 4, 3)
    assert run(TEAM, empty).state == "success"
    assert _file_rows(stack, duckling, empty) and set(_file_rows(stack, duckling, empty).values()) == {0}
    assert lake_day_counts(duckling, "events").get(empty, 0) == 0


def test_registration_checks_rows_from_the_footers_not_by_reading_the_day(stack, duckling):
    """ClickHouse's files carry team_id and timestamp statistics: their footers prove the rows belong to
    the partition, so registration never reads the day's data into the worker."""
    from airflow_provider_duckling.domain.tables import EVENTS
    from airflow_provider_duckling.transfer.export import export_partition
    from airflow_provider_duckling.transfer.lake import rows_proven_in_scope

    storage = DuckLakeHook().storage(duckling)
    exported = export_partition(ClickHouseHook(), storage, EVENTS, Partition(TEAM, BIG_DAY), "footer", rows_per_file=10_000)
    with DuckLakeHook().attach(duckling, storage) as con:
        assert rows_proven_in_scope(con, EVENTS, Partition(TEAM, BIG_DAY), exported.files) == BIG_ROWS
        assert rows_proven_in_scope(con, EVENTS, Partition(TEAM, SMALL_DAY), exported.files) is None  # another day
        assert rows_proven_in_scope(con, EVENTS, Partition(TEAM + 1, BIG_DAY), exported.files) is None  # another team
