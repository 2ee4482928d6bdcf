"""Export-only files stay (issue 14, point 8).

A run with ``skip_ducklake_registration`` writes its files on purpose: the register task marks each one
(``export_only/{key}.json``) and maintenance keeps marked files for good, while it still deletes a genuine
orphan (an export nobody registered or marked) once the safety window has passed.
"""

from __future__ import annotations

import datetime as dt
import json

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.scheduling.airflow_env import load_dags, run_day
from airflow_provider_duckling.transfer.maintenance import run_maintenance
from tests.support.runs import team_dag
from tests.support.stack import DAYS

TEAM = 250


def test_export_only_files_are_marked_and_survive_maintenance_while_orphans_go(stack):
    ch = ClickHouseHook()
    insert_events(ch, TEAM, DAYS[0], 13, days=2)
    duckling = stack.new_duckling(TEAM, "exportonly")
    stack.use(duckling)
    load_dags()
    dag = team_dag(TEAM)
    assert run_day(dag, DAYS[0]).state == "success"  # a registered day: the lake exists

    day = DAYS[1]
    prefix = f"backfill/events/team_id={TEAM}/year={day:%Y}/month={day:%m}/day={day:%d}/"
    run = run_day(dag, day, {"skip_ducklake_registration": True})
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {
        "wait_for_late_events": "success", "export": "success", "register": "skipped"}
    files = stack.keys(duckling.bucket, prefix)
    markers = stack.keys(duckling.bucket, "export_only/")
    assert len(files) == 1 and markers == [f"export_only/{files[0]}.json"]
    body = json.loads(stack.s3().get_object(Bucket=duckling.bucket, Key=markers[0])["Body"].read())
    assert body == {"partition": f"{TEAM}_{day}", "table": "events", "run_id": run.run_id, "rows": 13,
                    "file": f"s3://{duckling.bucket}/{files[0]}"}
    assert lake_day_counts(duckling, "events") == {DAYS[0]: 13}  # not registered

    # A dry run with the same option writes neither a file nor a marker.
    assert run_day(dag, day, {"skip_ducklake_registration": True, "dry_run": True}).state == "success"
    assert stack.keys(duckling.bucket, prefix) == files
    assert stack.keys(duckling.bucket, "export_only/") == markers

    # A genuine orphan beside it: an export that nobody registered or marked.
    stray = f"{prefix}crashed-run-try1.parquet"
    stack.s3().put_object(Bucket=duckling.bucket, Key=stray, Body=b"PAR1 not registered")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)  # every file is past the safety window
    report = run_maintenance(TEAM, dry_run=False, snapshot_retention=dt.timedelta(days=7),
                             orphan_retention=dt.timedelta(days=7), orphans_before=later)
    assert report["deleted_orphans"] == 1 and report["orphan_paths"] == [f"s3://{duckling.bucket}/{stray}"]
    assert report["export_only_kept"] == 1 and report["recent_orphans_kept"] == 0
    assert stack.keys(duckling.bucket, prefix) == files  # the export-only file stayed, the stray went
    assert stack.keys(duckling.bucket, "export_only/") == markers
    assert lake_day_counts(duckling, "events") == {DAYS[0]: 13}
