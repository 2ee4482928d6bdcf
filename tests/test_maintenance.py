"""Lake maintenance on the real stack (PostgreSQL catalog, moto S3): merge a day's small files (never files of
different days), expire old snapshots, delete unreferenced files and old never-registered exports, never a
referenced file; a dry run changes nothing."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.scheduling.dag_factory import MAINTENANCE_DAG_ID
from airflow_provider_duckling.transfer.maintenance import live_files, run_maintenance
from tests.support.runs import run, snapshot_id, unregistered_export
from tests.support.stack import DAYS

TEAM = 3


@pytest.fixture
def duckling(stack, request):
    return stack.new_duckling(TEAM, "mnt" + request.node.name[5:16].replace("_", "-"))


def _snapshots(duckling) -> int:
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        return con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0]


def _live(duckling) -> set[str]:
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        return live_files(con)


def _all_objects(stack, duckling) -> set[str]:
    return {f"s3://{duckling.bucket}/{key}" for key in stack.keys(duckling.bucket)}


def test_maintenance_merges_expires_and_deletes_only_unreferenced_files(stack, duckling):
    for day in DAYS:
        assert run(TEAM, day).state == "success"
    assert run(TEAM, DAYS[0]).state == "success"  # a re-run: the first file of the day is replaced
    # Appended (no cleanup): the last day now holds two small files and twice its rows.
    assert run(TEAM, DAYS[4], cleanup_existing_partition_data=False).state == "success"
    assert unregistered_export(TEAM, DAYS[1]).state == "success"  # an old orphan
    time.sleep(1.5)  # S3 keeps whole seconds
    window_ends = dt.datetime.now(dt.UTC)
    time.sleep(1.5)
    assert unregistered_export(TEAM, DAYS[2]).state == "success"  # a recent orphan
    expected = {day: stack.counts[(TEAM, day)] * (2 if day == DAYS[4] else 1) for day in DAYS}
    assert lake_day_counts(duckling, "events") == expected
    live_before, objects_before, snapshots_before = _live(duckling), _all_objects(stack, duckling), _snapshots(duckling)
    assert len(objects_before) == 9  # 5 days + the appended file + the replaced file + 2 orphans
    # Every snapshot but the current one expires; the old orphan is outside the safety window, the recent
    # one inside it.
    window = dict(snapshot_retention=dt.timedelta(0), orphan_retention=dt.timedelta(days=7), orphans_before=window_ends)

    dry = run_maintenance(TEAM, dry_run=True, **window)
    assert _all_objects(stack, duckling) == objects_before and _snapshots(duckling) == snapshots_before
    assert _live(duckling) == live_before
    assert dry["deleted_orphans"] == 1 and dry["recent_orphans_kept"] == 1 and dry["expired_snapshots"] > 0
    assert dry["orphan_paths"][0].startswith(f"s3://{duckling.bucket}/backfill/events/team_id={TEAM}/year=2024/month=03/day=09/")

    report = run_maintenance(TEAM, dry_run=False, **window)
    # Only the day of two files is merged (into one); files of different days never are (day layout).
    assert report["files_before"] == len(live_before) and report["files_after"] == report["files_before"] - 1
    assert report["merged_files"] == 2 and report["days_rewritten"] == 1 and report["expired_snapshots"] > 0
    assert dry["days_rewritten"] == 1 and dry["merged_files"] == 0
    assert report["deleted_orphans"] == 1 and report["recent_orphans_kept"] == 1
    assert report["deleted_old_files"] >= 1  # at least the file the re-run of DAYS[0] replaced
    objects_after, live_after = _all_objects(stack, duckling), _live(duckling)
    assert live_after <= objects_after, live_after - objects_after  # every referenced file still exists
    deleted = objects_before - objects_after
    assert dry["orphan_paths"][0] in deleted and not deleted & live_after
    (replaced,) = [k for k in objects_before - live_before if "/day=08/" in k]  # day 0's first file
    assert replaced in deleted  # its snapshots expired: nothing references it any more
    recent_orphan = [k for k in objects_before if "/day=10/" in k and k not in live_before]
    assert recent_orphan and recent_orphan[0] in objects_after  # inside the safety window: kept
    assert _snapshots(duckling) < snapshots_before
    assert lake_day_counts(duckling, "events") == expected

    # The lake keeps working: a re-run after merging replaces the day exactly.
    before = snapshot_id(duckling)
    assert run(TEAM, DAYS[3]).state == "success"
    assert lake_day_counts(duckling, "events") == expected and snapshot_id(duckling) > before


def test_the_maintenance_dag_maps_one_task_per_duckling(stack, duckling):
    from tests.support.runs import load_dags

    bag = load_dags()
    dag = bag.get_dag(MAINTENANCE_DAG_ID)
    assert dag is not None and dag.params["dry_run"] is False
    assert dag.params["orphan_retention_days"] == 7 and dag.params["snapshot_retention_days"] == 7
    assert dag.get_task("maintain").max_active_tis_per_dag == 2
    run_ = dag.test(run_conf={"dry_run": True})
    assert run_.state == "success"
    states = {ti.map_index: ti.state for ti in run_.get_task_instances() if ti.task_id == "maintain"}
    assert len(states) == len(stack.ducklings) and set(states.values()) == {"success"}
