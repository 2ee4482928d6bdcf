"""The seven options of the original DucklingBackfillConfig, as DAG Params: each one's effect and
non-effect, through the generated DAGs on the real stack."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from tests.support.runs import catalog_tables, logged_text, run, snapshot_id, team_dag
from tests.support.stack import DAYS


@pytest.fixture
def duckling(stack, request):
    tag = "o" + request.node.name.removeprefix("test_")[:20].replace("_", "-")
    return stack.new_duckling(1, tag)




def test_params_appear_in_the_trigger_form_with_descriptions(stack, duckling):
    params = team_dag(1).params
    for name in ("clickhouse_settings", "skip_ducklake_registration", "skip_schema_validation",
                 "cleanup_existing_partition_data", "create_tables_if_missing", "delete_tables", "dry_run",
                 "partition_key"):
        assert params.get_param(name).description, name
    assert params["delete_tables"] is False and params["cleanup_existing_partition_data"] is True
    assert "full_export" in team_dag(1, "persons").params


def test_dry_run_writes_nothing_anywhere(stack, duckling, caplog, capfd):
    caplog.set_level(logging.INFO)
    # A brand-new duckling: not even the catalog gets initialised.
    assert run(1, DAYS[0], dry_run=True).state == "success"
    assert stack.keys(duckling.bucket) == []
    assert catalog_tables(stack, duckling) == 0
    text = logged_text(caplog, capfd)
    assert "INSERT INTO FUNCTION s3(" in text and "would CALL ducklake_add_data_files" in text
    assert "'dest_secret': '***'" in text

    assert run(1, DAYS[0]).state == "success"
    keys, snap = stack.keys(duckling.bucket), snapshot_id(duckling)
    assert run(1, DAYS[1], dry_run=True, delete_tables=True).state == "success"
    assert stack.keys(duckling.bucket) == keys and snapshot_id(duckling) == snap
    assert lake_day_counts(duckling, "events") == {DAYS[0]: stack.counts[(1, DAYS[0])]}


def test_skip_registration_exports_but_leaves_the_lake_alone(stack, duckling):
    assert run(1, DAYS[0]).state == "success"
    snap = snapshot_id(duckling)
    assert run(1, DAYS[1], skip_ducklake_registration=True).state == "success"
    assert len(stack.keys(duckling.bucket, "backfill/events/team_id=1/year=2024/month=03/day=09/")) == 1
    assert snapshot_id(duckling) == snap
    assert lake_day_counts(duckling, "events") == {DAYS[0]: stack.counts[(1, DAYS[0])]}


def test_cleanup_off_lets_rows_accumulate(stack, duckling):
    n = stack.counts[(1, DAYS[0])]
    assert run(1, DAYS[0]).state == "success"
    assert run(1, DAYS[0], cleanup_existing_partition_data=False).state == "success"
    assert lake_day_counts(duckling, "events") == {DAYS[0]: 2 * n}
    assert run(1, DAYS[0]).state == "success"  # cleanup back on: the day is exact again
    assert lake_day_counts(duckling, "events") == {DAYS[0]: n}


def test_create_off_fails_clearly_on_a_missing_table_before_exporting(stack, duckling, caplog, capfd):
    assert run(1, DAYS[0], create_tables_if_missing=False).state == "failed"
    assert "table posthog.events does not exist in the duckling of team 1 and create_tables_if_missing is off" in logged_text(caplog, capfd)
    assert stack.keys(duckling.bucket) == []


def test_delete_tables_drops_and_recreates_then_registers(stack, duckling, caplog, capfd):
    for day in DAYS[:2]:
        assert run(1, day).state == "success"
    caplog.set_level(logging.WARNING)
    assert run(1, DAYS[2], delete_tables=True).state == "success"
    assert lake_day_counts(duckling, "events") == {DAYS[2]: stack.counts[(1, DAYS[2])]}
    dropped = stack.counts[(1, DAYS[0])] + stack.counts[(1, DAYS[1])]
    assert f"event=tables_dropped DANGER table=posthog.events dropped_rows={dropped}" in logged_text(caplog, capfd)
    assert team_dag(1).params["delete_tables"] is False  # never on by default


def test_clickhouse_settings_are_applied_and_bad_ones_refused(stack, duckling, caplog, capfd):
    assert run(1, DAYS[0], clickhouse_settings={"output_format_parquet_row_group_size": 50}).state == "success"
    (key,) = stack.keys(duckling.bucket)
    with DuckLakeHook().attach(duckling) as con:
        groups = con.execute("SELECT count(DISTINCT row_group_id) FROM parquet_metadata(?)",
                             [f"s3://{duckling.bucket}/{key}"]).fetchone()[0]
    assert groups > 1  # the default (1,000,000 rows per group) would give one
    assert run(1, DAYS[1], clickhouse_settings={"max threads; DROP": 1}).state == "failed"
    assert "invalid ClickHouse setting name" in logged_text(caplog, capfd)
    assert len(stack.keys(duckling.bucket)) == 1


def test_schema_drift_fails_before_export_unless_validation_is_skipped(stack, duckling, caplog, capfd):
    assert run(1, DAYS[0]).state == "success"
    with DuckLakeHook().attach(duckling) as con:  # the customer changed a column to an incompatible type
        con.execute("ALTER TABLE lake.posthog.events DROP COLUMN event")
        con.execute("ALTER TABLE lake.posthog.events ADD COLUMN event INTEGER")
        con.execute("ALTER TABLE lake.posthog.events ADD COLUMN customer_note VARCHAR")
    keys = stack.keys(duckling.bucket)
    assert run(1, DAYS[1]).state == "failed"
    text = logged_text(caplog, capfd)
    assert "column event is INTEGER in the lake table, the export writes VARCHAR" in text
    assert "column customer_note (VARCHAR) in the lake table is not exported" in text
    assert stack.keys(duckling.bucket) == keys  # nothing exported

    caplog.clear()
    assert run(1, DAYS[1], skip_schema_validation=True).state == "failed"  # DuckLake itself refuses the file
    assert len(stack.keys(duckling.bucket)) == len(keys) + 1
    assert "cannot accept the exported file" in logged_text(caplog, capfd)
    assert lake_day_counts(duckling, "events") == {DAYS[0]: stack.counts[(1, DAYS[0])]}


def test_partition_key_runs_that_partition_with_options(stack, duckling, caplog, capfd):
    key = f"1_{DAYS[3].isoformat()}"
    assert run(1, DAYS[0], partition_key=key).state == "success"
    assert lake_day_counts(duckling, "events") == {DAYS[3]: stack.counts[(1, DAYS[3])]}
    assert run(1, DAYS[0], partition_key=f"2_{DAYS[3].isoformat()}").state == "failed"
    assert "belongs to team 2, not to this DAG's team 1" in logged_text(caplog, capfd)
    with pytest.raises(Exception, match="partition_key"):
        run(1, DAYS[0], partition_key="1-2024-03-11")


def test_a_lake_column_the_metadata_cannot_describe_is_checked_through_an_attach(stack, duckling, caplog, capfd):
    assert run(1, DAYS[0]).state == "success"
    with DuckLakeHook().attach(duckling) as con:  # a nested type: the catalog's own tables cannot say it exactly
        con.execute("ALTER TABLE lake.posthog.events DROP COLUMN event")
        con.execute("ALTER TABLE lake.posthog.events ADD COLUMN event VARCHAR[]")
    keys = stack.keys(duckling.bucket)
    caplog.clear()
    assert run(1, DAYS[1]).state == "failed"
    assert "column event is VARCHAR[] in the lake table, the export writes VARCHAR" in logged_text(caplog, capfd)
    assert stack.keys(duckling.bucket) == keys  # refused by the pre-flight: nothing exported
