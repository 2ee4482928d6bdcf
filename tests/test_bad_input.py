"""Bad input through the generated DAGs: each mistake a user can make in the trigger form or the
connections fails with one clear line, and nothing is written to the bucket or the catalog."""

from __future__ import annotations

import datetime as dt
import itertools
import os

import pytest

from tests.support.runs import catalog_tables, logged_text, run, snapshot_id
from tests.support.stack import DAYS

FUTURE = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
CASES = [
    ({"partition_key": f"1_{FUTURE}"}, "has not ended"),
    ({"partition_key": "1_1969-12-31"}, "before 1970-01-01"),
    ({"partition_key": "1_2024-02-30"}, "invalid day"),
    ({"partition_key": "2_2024-03-08"}, "belongs to team 2, not to this DAG's team 1"),
    ({"clickhouse_settings": {"max_threads": "1; DROP TABLE posthog.events"}}, "ClickHouseQueryError"),
    ({"clickhouse_settings": {"no such setting": 1}}, "invalid ClickHouse setting name"),
    ({"clickhouse_settings": {"max_threads": [1, 2]}}, "invalid value for ClickHouse setting max_threads"),
    ({"clickhouse_settings": {"max_threads'": 1}}, "invalid ClickHouse setting name"),
    ({"clickhouse_settings": {"no_such_setting_at_all": 1}}, "no_such_setting_at_all"),
    ({"create_tables_if_missing": False}, "create_tables_if_missing is off"),
]


_TAGS = itertools.count()


@pytest.fixture
def fresh(stack):
    return stack.new_duckling(1, f"bad{next(_TAGS)}")


@pytest.mark.parametrize("conf, message", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_bad_trigger_input_fails_clearly_and_writes_nothing(stack, fresh, conf, message, caplog, capfd):
    assert run(1, DAYS[0], **conf).state == "failed"
    text = logged_text(caplog, capfd)
    assert "event=task_failed" in text
    if message:
        assert message in text
    assert stack.keys(fresh.bucket) == []
    # Nothing registered, nothing initialised: the export's pre-flight only reads the catalog.
    assert catalog_tables(stack, fresh) == 0


@pytest.mark.parametrize("bad", ["bad partition key", "1-2024-03-08", "x_2024-03-08"])
def test_malformed_partition_keys_are_refused_by_the_trigger_form(stack, fresh, bad):
    with pytest.raises(Exception, match="partition_key"):
        run(1, DAYS[0], partition_key=bad)
    assert stack.keys(fresh.bucket) == []


def test_missing_connection_is_named(stack, fresh, monkeypatch, caplog, capfd):
    monkeypatch.delenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT")
    assert run(1, DAYS[0]).state == "failed"
    assert "ClickHouse connection 'clickhouse_default' is not defined" in logged_text(caplog, capfd)
    assert stack.keys(fresh.bucket) == []


def test_wrong_catalog_password_fails_without_writing_or_leaking(stack, fresh, monkeypatch, caplog, capfd):
    import json

    conn = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
    conn["password"] = "wrong-password-Secret5500"
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_DEFAULT", json.dumps(conn))
    assert run(1, DAYS[0]).state == "failed"
    text = logged_text(caplog, capfd)
    assert "cannot reach the duckling catalog of team 1" in text
    assert "wrong-password-Secret5500" not in text
    assert stack.keys(fresh.bucket) == []


def test_snapshot_untouched_by_a_failed_registration(stack, fresh):
    assert run(1, DAYS[0]).state == "success"
    before = snapshot_id(fresh)
    assert run(1, DAYS[1], clickhouse_settings={"max_rows_to_read": 5, "read_overflow_mode": "throw"}).state == "failed"
    assert snapshot_id(fresh) == before


def test_a_connection_of_another_type_is_refused_before_anything_is_sent(stack, monkeypatch, caplog, capfd):
    """A registry entry naming the ClickHouse connection as its catalog, or a DuckLake connection naming it as
    its AWS identity: refused with one line before any network call, so ClickHouse's password goes nowhere."""
    before = dict(stack.ducklings)
    try:
        _refused(stack, monkeypatch, caplog, capfd)
    finally:
        stack.use(*before.values())


def _refused(stack, monkeypatch, caplog, capfd) -> None:
    import dataclasses
    import json

    from tests.support.stack import CLICKHOUSE_PASSWORD

    foreign = dataclasses.replace(stack.new_duckling(1, f"bad{next(_TAGS)}"), catalog_conn_id="clickhouse_default")
    stack.use(foreign)
    assert run(1, DAYS[0]).state == "failed"
    text = logged_text(caplog, capfd)
    assert "connection 'clickhouse_default' is of type 'clickhouse', not 'ducklake'" in text
    assert CLICKHOUSE_PASSWORD not in text
    assert stack.keys(foreign.bucket) == [] and catalog_tables(stack, foreign) == 0

    fresh = stack.new_duckling(1, f"bad{next(_TAGS)}")
    stack.use(fresh)
    conn = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
    conn["extra"] = {**conn.get("extra", {}), "aws_conn_id": "clickhouse_default"}
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_DEFAULT", json.dumps(conn))
    assert run(1, DAYS[0]).state == "failed"
    text = logged_text(caplog, capfd)
    assert "connection 'clickhouse_default' is of type 'clickhouse', not 'aws'" in text
    assert CLICKHOUSE_PASSWORD not in text
    assert stack.keys(fresh.bucket) == [] and catalog_tables(stack, fresh) == 0
