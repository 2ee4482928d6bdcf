"""History in batches: a month of a team's events moves in one run — one ClickHouse statement writing each
day's own file under that day's prefix, one lake transaction, one asset event per day — and re-runs of a
batch or of its days, in any order, leave every day exact.

Real ClickHouse (chdb behind its HTTP interface), moto S3, PostgreSQL catalogs, Airflow's dag.test(). The
team has two years of history around the batch, so the statement's pruning and the read-back's listing are
measured against a realistic table, not one holding only the batch.
"""

from __future__ import annotations

import datetime as dt
import io
import logging

import pyarrow.parquet as pq
import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.domain.history import MONTH, WHOLE, batch_end, catchup_runs, daily_from
from airflow_provider_duckling.domain.partitions import DayRange, Partition, parse_key
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from tests.support.runs import logged_text, run, snapshot_id

TEAM = 2101
HISTORY_FROM, HISTORY_DAYS, ROWS_A_DAY = dt.date(2023, 1, 1), 730, 50
MONTH_FIRST, MONTH_LAST = dt.date(2024, 3, 1), dt.date(2024, 3, 31)
BIG_DAY, BIG_ROWS, ROWS_PER_FILE = dt.date(2024, 3, 12), 2_500, 1_000
EMPTY_DAY = dt.date(2024, 3, 20)
KEY = f"{TEAM}_{MONTH_FIRST}..{MONTH_LAST}"


def EVENTS_TABLE() -> str:  # noqa: N802 - reads like the table it names
    from airflow_provider_duckling.common.quoting import clickhouse_ident

    return f"{clickhouse_ident(ClickHouseHook().database)}.events"


# ---- the rule: which days one run moves -------------------------------------------------------------


def test_batches_are_calendar_months_up_to_the_daily_from_day():
    first_daily = dt.date(2026, 12, 3)
    assert batch_end(dt.date(2023, 11, 17), first_daily) == dt.date(2023, 12, 1)  # a start mid-month: the rest of it
    assert batch_end(dt.date(2024, 2, 1), first_daily) == dt.date(2024, 3, 1)  # leap February, whole
    assert batch_end(dt.date(2026, 12, 1), first_daily) == first_daily  # the last batch stops at the daily-from day
    assert batch_end(first_daily, first_daily) == first_daily + dt.timedelta(days=1)  # from there, one day per run
    assert batch_end(dt.date(2020, 1, 1), None) == dt.date(2020, 1, 2)  # without a daily-from day: daily
    assert batch_end(dt.date(2023, 11, 17), first_daily, WHOLE) == first_daily  # persons: all history at once
    with pytest.raises(ValueError, match="unknown history batch"):
        batch_end(dt.date(2024, 1, 1), first_daily, "week")
    # Blocks of months align to the year: quarters start in January, April, July and October.
    assert batch_end(dt.date(2023, 11, 17), first_daily, MONTH, 3) == dt.date(2024, 1, 1)
    assert batch_end(dt.date(2024, 1, 1), first_daily, MONTH, 3) == dt.date(2024, 4, 1)
    assert batch_end(dt.date(2024, 5, 9), first_daily, MONTH, 6) == dt.date(2024, 7, 1)
    assert batch_end(dt.date(2026, 10, 1), first_daily, MONTH, 12) == first_daily
    with pytest.raises(ValueError, match="months"):
        batch_end(dt.date(2024, 1, 1), first_daily, MONTH, 5)


def test_a_1100_day_team_catches_up_in_at_most_110_runs():
    """The issue's figure: 2,204 runs for a 1,100-day team (both DAGs, one a day); now months + top-up days."""
    today = dt.date(2026, 12, 6)
    start = today - dt.timedelta(days=1100)
    events_from = daily_from(today, 3)
    events = catchup_runs(start, today, events_from, MONTH)
    persons = catchup_runs(start, today, today, WHOLE)  # persons' daily-from day is the day first seen
    assert persons == 1
    assert 36 <= events <= 40  # one month per run
    assert events + persons <= 110
    quarters = catchup_runs(start, today, events_from, MONTH, 3)  # [duckling] history_batch_months' default
    assert 12 <= quarters <= 17 and quarters + persons <= 18
    assert catchup_runs(start, today, None) == 1100  # the old schedule, for comparison


def test_range_keys_are_validated_like_partition_keys():
    assert parse_key(KEY) == DayRange(TEAM, MONTH_FIRST, MONTH_LAST)
    assert parse_key(f"{TEAM}_{MONTH_FIRST}") == Partition(TEAM, MONTH_FIRST)
    from airflow_provider_duckling.common.errors import PartitionError

    for bad in (f"{TEAM}_2024-03-31..2024-03-01", f"{TEAM}_2024-03-01..2099-01-01", f"{TEAM}_2020-01-01..2022-01-01",
                f"{TEAM}_2024-03-01...2024-03-02", f"{TEAM}_2024-03-01..2024-3-2", f"0_{MONTH_FIRST}..{MONTH_LAST}",
                f"{TEAM}_2024-02-30..2024-03-02", f"{TEAM}_2024-03-01..2024-03-02\n"):
        with pytest.raises(PartitionError):
            parse_key(bad)


def test_the_timetable_widens_history_intervals_and_round_trips():
    import pendulum
    from airflow.timetables.base import DataInterval, TimeRestriction

    from airflow_provider_duckling.timetables.history import HistoryBatchTimetable

    table = HistoryBatchTimetable("0 0 * * *", "UTC", daily_from=dt.date(2024, 3, 4))
    utc = pendulum.UTC

    def after(start: dt.date | None, end: dt.date | None, earliest: dt.date = dt.date(2024, 1, 15)):
        last = None if start is None else DataInterval(pendulum.datetime(start.year, start.month, start.day, tz=utc),
                                                      pendulum.datetime(end.year, end.month, end.day, tz=utc))
        restriction = TimeRestriction(pendulum.datetime(earliest.year, earliest.month, earliest.day, tz=utc), None, True)
        info = table.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        return info.data_interval.start.date(), info.data_interval.end.date(), info.run_after.date()

    assert after(None, None) == (dt.date(2024, 1, 15), dt.date(2024, 2, 1), dt.date(2024, 2, 1))
    assert after(dt.date(2024, 1, 15), dt.date(2024, 2, 1)) == (dt.date(2024, 2, 1), dt.date(2024, 3, 1), dt.date(2024, 3, 1))
    assert after(dt.date(2024, 2, 1), dt.date(2024, 3, 1)) == (dt.date(2024, 3, 1), dt.date(2024, 3, 4), dt.date(2024, 3, 4))
    assert after(dt.date(2024, 3, 1), dt.date(2024, 3, 4)) == (dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 5))
    # A daily run made before the upgrade (or a top-up that took a batch's first day): go on from its end.
    assert after(dt.date(2024, 1, 20), dt.date(2024, 1, 21)) == (dt.date(2024, 1, 21), dt.date(2024, 2, 1), dt.date(2024, 2, 1))
    # A manual run at midnight still covers that one day.
    manual = table.infer_manual_data_interval(run_after=pendulum.datetime(2024, 1, 20, tz=utc))
    assert (manual.start.date(), manual.end.date()) == (dt.date(2024, 1, 20), dt.date(2024, 1, 21))

    again = HistoryBatchTimetable.deserialize(table.serialize())
    assert (again.daily_from, again.batch, again.paused, again.months) == (dt.date(2024, 3, 4), MONTH, False, 1)
    quarters = HistoryBatchTimetable("0 0 * * *", "UTC", daily_from=dt.date(2024, 3, 4), months=3)
    assert HistoryBatchTimetable.deserialize(quarters.serialize()).months == 3
    assert HistoryBatchTimetable.deserialize({**quarters.serialize(), "months": 5}).months == 1
    assert HistoryBatchTimetable.deserialize({**table.serialize(), "batch": "nonsense"}).batch == MONTH
    paused = HistoryBatchTimetable("0 0 * * *", "UTC", daily_from=dt.date(2024, 3, 4), paused=True)
    assert paused.next_dagrun_info(last_automated_data_interval=None,
                                   restriction=TimeRestriction(pendulum.datetime(2024, 1, 1, tz=utc), None, True)) is None


# ---- a month through the operators ----------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(stack):
    hook = ClickHouseHook()
    insert_events(hook, TEAM, HISTORY_FROM, ROWS_A_DAY, days=HISTORY_DAYS)  # two years around the batch
    hook.execute("ALTER TABLE " + EVENTS_TABLE() + " DELETE WHERE team_id = {team:Int64} AND toDate(timestamp) = {day:Date} "
                 "SETTINGS mutations_sync = 1", {"team": TEAM, "day": EMPTY_DAY.isoformat()})
    insert_events(hook, TEAM, BIG_DAY, BIG_ROWS - ROWS_A_DAY)
    return {MONTH_FIRST + dt.timedelta(days=n): ROWS_A_DAY for n in range(31)} | {EMPTY_DAY: 0, BIG_DAY: BIG_ROWS}


@pytest.fixture
def duckling(stack, seeded, monkeypatch, request):
    monkeypatch.setenv("AIRFLOW__DUCKLING__ROWS_PER_FILE", str(ROWS_PER_FILE))
    return stack.new_duckling(TEAM, "hist" + request.node.name[5:14].replace("_", "-"), start_date=HISTORY_FROM)


def _objects(stack, duckling) -> dict[str, int]:
    """Every object of the team's events, key → rows (from its Parquet footer)."""
    out = {}
    for key in stack.keys(duckling.bucket, f"backfill/events/team_id={TEAM}/"):
        body = stack.s3().get_object(Bucket=duckling.bucket, Key=key)["Body"].read()
        out[key] = pq.ParquetFile(io.BytesIO(body)).metadata.num_rows
    return out


def _token(name: str) -> str:
    """The run part of a file name (``manual__…-try1`` of ``manual__…-try1-part0.parquet``)."""
    return name.split("-part")[0].removesuffix(".parquet")


def _asset_partitions(dag_id: str) -> dict[str, int]:
    """Partition key → asset events the DAG's runs emitted for it (Airflow's metadata DB)."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_dag_id == dag_id).all()
        out: dict[str, int] = {}
        for event in events:
            out[event.partition_key] = out.get(event.partition_key, 0) + 1
        return out


def test_a_month_is_one_run_one_commit_and_each_day_its_own_file(stack, duckling, seeded, caplog, capfd):
    caplog.set_level(logging.INFO)
    assert run(TEAM, MONTH_LAST, partition_key=KEY).state == "success"
    created = snapshot_id(duckling)
    assert run(TEAM, MONTH_LAST, partition_key=KEY).state == "success"
    assert snapshot_id(duckling) == created + 1  # the whole month again, in one commit
    expected = {d: n for d, n in seeded.items() if n}
    assert lake_day_counts(duckling, "events") == expected

    objects = _objects(stack, duckling)
    by_day: dict[dt.date, list[tuple[str, int]]] = {}
    for key, rows in objects.items():
        day = dt.datetime.strptime(key.split(f"team_id={TEAM}/")[1].rsplit("/", 1)[0], "year=%Y/month=%m/day=%d").date()
        by_day.setdefault(day, []).append((key.rsplit("/", 1)[1], rows))
    latest = {d: [f for f in files if _token(f[0]) == max(_token(g[0]) for g in files)] for d, files in by_day.items()}
    assert set(latest) == set(expected)  # every day with rows, under its own day's prefix; the empty day has none
    by_day = latest
    for day, files in by_day.items():
        if day == BIG_DAY:  # a day above rows_per_file: its own statement, split into parts
            assert len(files) == 3 and all("-part" in name for name, _ in files) and sum(r for _, r in files) == BIG_ROWS
        else:
            assert len(files) == 1 and files[0][1] == ROWS_A_DAY and "-part" not in files[0][0]

    text = logged_text(caplog, capfd)
    assert f"event=batch_planned partition={KEY} table=events days=31 days_with_rows=30" in text
    assert "statements=3 large_days=1" in text  # 1–11, 12 (its own, in parts), 13–31
    assert f"event=partition_registered partition={KEY} table=events files={29 + 3}" in text

    events = _asset_partitions(f"duckling_events_backfill_team_{TEAM}")
    assert events == {Partition(TEAM, MONTH_FIRST + dt.timedelta(days=n)).key: 2 for n in range(31)}  # one per day and run
    # Airflow gives a task's events one extra: it names the batch, and no day gets the batch's figures.
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        event = session.query(AssetEvent).filter(AssetEvent.partition_key == f"{TEAM}_{BIG_DAY}").first()
        extra = dict(event.extra)
    total = sum(expected.values())
    assert extra["batch"] == KEY and extra["batch_days"] == 31 and extra["batch_rows"] == total
    assert extra["batch_files"] == 32 and extra["rows"] is None and extra["files"] is None


def test_rerunning_a_batch_and_its_days_in_any_order_keeps_every_day_exact(stack, duckling, seeded):
    expected = {d: n for d, n in seeded.items() if n}
    day = dt.date(2024, 3, 5)
    assert run(TEAM, day).state == "success"  # a top-up style single day first
    assert run(TEAM, MONTH_LAST, partition_key=KEY).state == "success"
    assert run(TEAM, MONTH_LAST, partition_key=KEY).state == "success"  # the same batch again
    assert run(TEAM, day).state == "success"  # and a day of it again
    assert lake_day_counts(duckling, "events") == expected

    # Rows of one day deleted in ClickHouse, rows added to another: a re-run of the batch follows both.
    hook = ClickHouseHook()
    gone, grown = dt.date(2024, 3, 7), dt.date(2024, 3, 8)
    hook.execute("ALTER TABLE " + EVENTS_TABLE() + " DELETE WHERE team_id = {team:Int64} AND toDate(timestamp) = {day:Date} "
                 "SETTINGS mutations_sync = 1", {"team": TEAM, "day": gone.isoformat()})
    insert_events(hook, TEAM, grown, 7)
    try:
        assert run(TEAM, MONTH_LAST, partition_key=KEY).state == "success"
        now = lake_day_counts(duckling, "events")
        assert gone not in now and now[grown] == ROWS_A_DAY + 7
        assert {d: n for d, n in now.items() if d not in (gone, grown)} == {
            d: n for d, n in expected.items() if d not in (gone, grown)}
    finally:
        hook.execute("ALTER TABLE " + EVENTS_TABLE() + " DELETE WHERE team_id = {team:Int64} AND toDate(timestamp) IN ({a:Date}, {b:Date}) "
                     "SETTINGS mutations_sync = 1", {"team": TEAM, "a": gone.isoformat(), "b": grown.isoformat()})
        insert_events(hook, TEAM, gone, ROWS_A_DAY)
        insert_events(hook, TEAM, grown, ROWS_A_DAY)


def test_a_dry_run_of_a_batch_writes_nothing(stack, duckling, caplog, capfd):
    caplog.set_level(logging.INFO)
    dag_run = run(TEAM, MONTH_LAST, partition_key=KEY, dry_run=True)
    assert dag_run.state == "success"
    assert _objects(stack, duckling) == {}
    text = logged_text(caplog, capfd)
    assert "event=dry_run_export days=2024-03-01..2024-03-11 would run" in text
    assert "PARTITION BY formatDateTime(timestamp, 'year=%Y/month=%m/day=%d', 'UTC')" in text
    assert "dest_secret': '***'" in text or "dest_path" in text


def test_a_batch_of_persons_days_is_the_full_export(stack, duckling, caplog, capfd):
    """Persons history is one full export: a range of persons days writes the team's full export (never
    one file per day), registered as the full export."""
    caplog.set_level(logging.INFO)
    dag_run = run(TEAM, MONTH_LAST, table="persons", partition_key=KEY)
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["export"] == "success" and states["register"] == "success"
    keys = stack.keys(duckling.bucket, f"backfill/persons/team_id={TEAM}/")
    assert len(keys) == 1 and "/full/" in keys[0]
    text = logged_text(caplog, capfd)
    assert f"event=persons_full_export partition={KEY} reason=no_baseline" in text
    assert f"event=partition_registered partition={TEAM}_full table=persons" in text


@pytest.mark.parametrize("key", [f"{TEAM + 1}_{MONTH_FIRST}..{MONTH_LAST}", f"{TEAM}_{MONTH_LAST}..{MONTH_FIRST}",
                                 f"{TEAM}_2023-01-01..2024-03-01"], ids=["other-team", "backwards", "over-a-year"])
def test_a_bad_range_is_refused_before_anything_is_written(stack, duckling, key, caplog, capfd):
    from tests.support.runs import catalog_tables

    assert run(TEAM, MONTH_LAST, partition_key=key).state == "failed"
    assert catalog_tables(stack, duckling) == 0 and _objects(stack, duckling) == {}
    assert "retryable=false reason=PartitionError" in logged_text(caplog, capfd)


def test_every_option_applies_to_a_batch(stack, duckling, seeded):
    """skip registration keeps each day's files (marked) and leaves the lake alone; cleanup off adds the days'
    rows again; delete_tables resets the table in the batch's own transaction."""
    expected = {d: n for d, n in seeded.items() if n}
    skipped = run(TEAM, MONTH_LAST, partition_key=KEY, skip_ducklake_registration=True)
    assert {ti.task_id: ti.state for ti in skipped.get_task_instances()}["register"] == "skipped"
    objects = _objects(stack, duckling)
    markers = stack.keys(duckling.bucket, "export_only/")
    assert len(objects) == 29 + 3 and len(markers) == len(objects)  # every day's file kept, each marked
    assert lake_day_counts(duckling, "events") == {}

    assert run(TEAM, MONTH_LAST, partition_key=KEY).state == "success"
    assert run(TEAM, MONTH_LAST, partition_key=KEY, cleanup_existing_partition_data=False).state == "success"
    assert lake_day_counts(duckling, "events") == {d: 2 * n for d, n in expected.items()}

    outside = dt.date(2024, 5, 2)
    assert run(TEAM, outside).state == "success"
    assert run(TEAM, MONTH_LAST, partition_key=KEY, delete_tables=True).state == "success"
    assert lake_day_counts(duckling, "events") == expected  # the day outside the batch went with the reset


def test_duckling_status_counts_every_day_of_a_batch():
    """`duckling status` folds runs into days: a batch run covers each day of its interval or range key."""
    from airflow_provider_duckling.cli.history import fold_runs

    def at(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)

    dag = "duckling_events_backfill_team_1"
    april = dt.date(2024, 4, 1)
    rows = [
        (dag, "success", None, at(MONTH_FIRST), at(april), at(april), 1, at(april)),  # the March batch
        (dag, "failed", '{"partition_key": "1_2024-03-05"}', None, at(april) + dt.timedelta(hours=1), None, 2, None),
        (dag, "running", '{"partition_key": "1_2024-04-01..2024-04-03"}', None, at(april) + dt.timedelta(hours=2),
         None, 3, None),
        (dag, "success", '{"partition_key": "1_2024-04-01..2024-04-03", "dry_run": true}', None,
         at(april) + dt.timedelta(hours=3), at(april), 4, None),  # a dry run moves nothing
    ]
    states = fold_runs(rows)[dag]
    march = {MONTH_FIRST + dt.timedelta(days=n) for n in range(31)}
    assert states.succeeded == march - {dt.date(2024, 3, 5)} and states.failed == {dt.date(2024, 3, 5)}
    assert states.running == {april, dt.date(2024, 4, 2), dt.date(2024, 4, 3)}
    assert states.last_success_day == MONTH_LAST


def test_the_batch_size_setting_divides_the_year(monkeypatch):
    from airflow_provider_duckling.common.errors import ConfigurationError
    from airflow_provider_duckling.registry.settings import history_batch_months

    monkeypatch.delenv("AIRFLOW__DUCKLING__HISTORY_BATCH_MONTHS", raising=False)
    assert history_batch_months() == 3
    monkeypatch.setenv("AIRFLOW__DUCKLING__HISTORY_BATCH_MONTHS", "1")
    assert history_batch_months() == 1
    for bad in ("5", "0", "13", "three", "-3"):
        monkeypatch.setenv("AIRFLOW__DUCKLING__HISTORY_BATCH_MONTHS", bad)
        with pytest.raises(ConfigurationError, match="history_batch_months"):
            history_batch_months()
