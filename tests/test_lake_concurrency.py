"""Atomic swaps and concurrent workers, on a PostgreSQL-backed lake with data on moto S3.

Each worker uses its own DuckDB instance (as separate Airflow workers would), so conflicts are decided by
the PostgreSQL catalog for real.
"""

from __future__ import annotations

import datetime as dt
import threading

from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.export import export_partition
from airflow_provider_duckling.transfer.lake import count_rows, ensure_table, register_files, table_exists
from tests.support.stack import DAYS


def export_and_register(duckling, day, token):
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    exported = export_partition(ClickHouseHook(), storage, EVENTS, Partition(duckling.team_id, day), token)
    with hook.attach(duckling, storage) as con:
        return register_files(
            con, EVENTS, Partition(duckling.team_id, day), exported.files, exported.rows, storage.data_path
        )


def test_readers_never_see_an_empty_or_doubled_day_during_swaps(stack):
    duckling = stack.new_duckling(1, "atomic")
    day = DAYS[1]
    expected = stack.counts[(1, day)]
    assert export_and_register(duckling, day, "v0").rows == expected

    seen: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader():
        try:
            with DuckLakeHook().attach(duckling) as con:
                while not stop.is_set():
                    seen.append(count_rows(con, EVENTS, Partition(1, day)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for version in range(1, 6):
            result = export_and_register(duckling, day, f"v{version}")
            assert result.deleted_rows == expected and result.rows == expected
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert len(seen) >= 100, f"only {len(seen)} reads overlapped the swaps"
    assert set(seen) == {expected}, f"readers saw {sorted(set(seen))}, expected only {expected}"


def test_eight_days_of_one_team_commit_at_once_while_the_table_is_created(stack):
    """8 registrations race on a brand-new catalog: one creates the table, all conflict on commit and
    retry with backoff; every day ends exact."""
    from tests.support.stack import TEAMS

    team = TEAMS[1]
    duckling = stack.new_duckling(team, "parallel")
    days = list(DAYS) + [DAYS[0] - dt.timedelta(days=n) for n in (1, 2, 3)]
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    exports = {d: export_partition(ClickHouseHook(), storage, EVENTS, Partition(team, d), "p1") for d in days}
    barrier = threading.Barrier(len(days))
    results, errors = {}, []

    def register(day):
        try:
            with hook.attach(duckling, storage) as con:
                barrier.wait(timeout=60)
                e = exports[day]
                results[day] = register_files(con, EVENTS, Partition(team, day), e.files, e.rows, storage.data_path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(d,)) for d in days]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8
    with hook.attach(duckling, storage) as con:
        for day in days:
            assert count_rows(con, EVENTS, Partition(team, day)) == stack.counts.get((team, day), 0)
        files = con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchone()
    assert files == (len(DAYS),)  # one file per day with rows (DuckLake keeps no empty data file)


def _create_table(duckling, storage, barrier, errors):
    try:
        with DuckLakeHook().attach(duckling, storage) as con:
            barrier.wait(timeout=60)
            ensure_table(con, EVENTS)
            assert table_exists(con, EVENTS)
    except BaseException as exc:
        errors.append(exc)


def test_workers_creating_the_table_at_once_all_succeed(stack):
    for round_ in range(3):
        duckling = stack.new_duckling(3, f"create{round_}")
        hook = DuckLakeHook()
        storage = hook.storage(duckling)
        workers = 3
        barrier = threading.Barrier(workers)
        errors = []
        threads = [
            threading.Thread(target=_create_table, args=(duckling, storage, barrier, errors)) for _ in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        with hook.attach(duckling, storage) as con:
            tables = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND table_name = 'events'"
            ).fetchone()
        assert tables == (1,)
    # And the table is usable right away.
    assert export_and_register(duckling, DAYS[0], "after-race").rows == stack.counts[(3, DAYS[0])]
