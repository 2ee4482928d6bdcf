"""Every byte ClickHouse holds lands readable (issue 23, points 1 and 2), on the real stack.

A ClickHouse ``String`` holds any bytes; DuckDB's Parquet reader refuses a string column chunk that is not
valid UTF-8, and then every query that reads that column of that file fails. The export writes text columns
through ``toValidUTF8`` (each invalid sequence becomes U+FFFD, valid text is kept byte for byte) and says how
many values it changed; ``duckling verify`` and the reconciliation decode every string column of the days
they compare, so a file the reader refuses (planted here by hand, bypassing the export) is reported and
repaired.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

import duckdb
import pytest

from airflow_provider_duckling.cli.main import main
from airflow_provider_duckling.common.quoting import duckdb_literal
from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS, PERSONS, export_select
from airflow_provider_duckling.health.reconcile import compare_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.export import export_partition
from airflow_provider_duckling.transfer.lake import register_files
from tests.support.runs import logged_text, return_value, run
from tests.test_freshness_alerts import _datagrams, statsd  # noqa: F401 - the StatsD listener fixture
from tests.test_reconcile import _reconcile_dag, _run_queued

#: Teams no other test file inserts rows for: files share a worker's ClickHouse (261 collided with the
#: freshness test's rows for today's days, so the export moved its 91 events too).
TEAM, PLANTED = 283, 284
TODAY = dt.datetime.now(dt.UTC).date()
DAY = TODAY - dt.timedelta(days=2)  # inside the reconciliation's window (the last 3 closed days)
NOON = dt.datetime.combine(DAY, dt.time(12), tzinfo=dt.UTC)

#: Text that is not UTF-8, as ClickHouse may hold it: stray continuation bytes (the report's ``80 FE``), an
#: overlong encoding of '/', a UTF-16 surrogate, a truncated sequence, a lone 0xFF after a megabyte of text.
STRAY, OVERLONG, SURROGATE, TRUNCATED = b"\x80\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"
MEGABYTE = b"x" * (1 << 20) + b"\xff"
#: Valid text that must come through byte for byte: accents, an emoji, a NUL.
VALID = '{"name": "ünïcødé 🦆", "nul": "a\x00b"}'.encode()
#: One event per row: the text columns given (hex-encoded into the INSERT), every other text column valid.
EVENT_ROWS = [
    {"properties": b'{"p": "' + STRAY + b'"}'},
    {"event": b"pageview" + OVERLONG, "distinct_id": b"user-" + SURROGATE},
    {"elements_chain": b"a:" + TRUNCATED},
    {"group2_properties": MEGABYTE},
    {"properties": VALID, "person_properties": VALID},
]
EXPECTED_INVALID = {"event": 1, "properties": 1, "distinct_id": 1, "elements_chain": 1, "group2_properties": 1}


def _insert_event(ch: ClickHouseHook, team: int, n: int, text: dict[str, bytes]) -> None:
    """One event of ``team`` at noon + ``n`` s of :data:`DAY` with the given raw bytes in its text columns."""
    values = {c: text.get(c, b"ok") for c in EVENTS.text_columns}
    columns = ", ".join(values)
    unhexed = ", ".join(f"unhex({{{c}:String}})" for c in values)
    ch.execute(
        f"INSERT INTO {ch.database}.events (uuid, timestamp, team_id, created_at, {columns}) "
        f"SELECT generateUUIDv4(), toDateTime64({{ts:String}}, 6, 'UTC'), {{team:Int64}}, now64(6), {unhexed}",
        {"team": team, "ts": (NOON + dt.timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S"),
         **{c: v.hex() for c, v in values.items()}},
    )


def _insert_person(ch: ClickHouseHook, team: int, distinct_id: bytes, properties: bytes, when: dt.datetime = NOON,
                   ) -> None:
    person = str(uuid.uuid5(uuid.NAMESPACE_URL, f"utf8/{team}/{distinct_id.hex()}"))
    at = {"ts": when.strftime("%Y-%m-%d %H:%M:%S")}
    ch.execute(
        f"INSERT INTO {ch.database}.person (id, team_id, properties, is_identified, created_at, version, is_deleted, "
        "_timestamp) SELECT {id:UUID}, {team:Int64}, unhex({p:String}), 1, toDateTime64({ts:String}, 3, 'UTC'), 1, 0, "
        "toDateTime({ts:String}, 'UTC')", {"id": person, "team": team, "p": properties.hex(), **at})
    ch.execute(
        f"INSERT INTO {ch.database}.person_distinct_id2 (team_id, distinct_id, person_id, version, is_deleted, "
        "_timestamp) SELECT {team:Int64}, unhex({d:String}), {id:UUID}, 1, 0, toDateTime({ts:String}, 'UTC')",
        {"team": team, "d": distinct_id.hex(), "id": person, **at})


def _assert_team_unused(ch: ClickHouseHook, team: int) -> None:
    """Fail with the reason when another test file already put rows of ``team`` into the shared ClickHouse."""
    held = {table: ch.query_rows(f"SELECT count() FROM {ch.database}.{table} WHERE team_id = {{team:Int64}}",
                              {"team": team})[0][0] for table in ("events", "person")}
    assert held == {"events": 0, "person": 0}, f"team {team} already has rows from another test file: {held}"


def _read_everything(duckling, table: str) -> list[tuple]:
    """What a customer's DuckDB answers to ``SELECT *`` of the team's rows (every column decoded)."""
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        return con.execute(f"SELECT * FROM lake.posthog.{table} WHERE team_id = {duckling.team_id}").fetchall()


def test_every_string_column_of_both_tables_lands_readable_and_the_changes_are_counted(
        stack, statsd, caplog, capfd):  # noqa: F811 - the imported fixture
    caplog.set_level(logging.INFO)
    ch = ClickHouseHook()
    _assert_team_unused(ch, TEAM)
    for n, text in enumerate(EVENT_ROWS):
        _insert_event(ch, TEAM, n, text)
    _insert_person(ch, TEAM, b"person-" + STRAY, b'{"email": "' + SURROGATE + b'"}')
    _insert_person(ch, TEAM, b"person-ok", VALID)
    duckling = stack.new_duckling(TEAM, "utf8", start_date=DAY)
    stack.use(duckling)

    events_run = run(TEAM, DAY)
    assert events_run.state == "success"
    assert return_value(events_run, "register")["invalid_utf8"] == EXPECTED_INVALID
    persons_run = run(TEAM, DAY, "persons")  # the team's first persons run: its full export
    assert persons_run.state == "success"
    assert return_value(persons_run, "register")["invalid_utf8"] == {"distinct_id": 1, "properties": 1}
    text = logged_text(caplog, capfd)
    assert (f"event=invalid_utf8_replaced partition={TEAM}_{DAY} table=events values=5 "
            "columns=event:1,properties:1,distinct_id:1,elements_chain:1,group2_properties:1") in text
    assert "table=persons values=2 columns=distinct_id:1,properties:1" in text
    received = {line.split("|")[0] for line in _datagrams(statsd) if ".invalid_utf8_values." in line}
    assert received == {f"airflow.duckling.invalid_utf8_values.team_{TEAM}.events:5",
                        f"airflow.duckling.invalid_utf8_values.team_{TEAM}.persons:2"}

    # Events moved as a batch (a range of days) count the same.
    batch = run(TEAM, DAY, partition_key=f"{TEAM}_{DAY - dt.timedelta(days=1)}..{DAY}")
    assert batch.state == "success" and return_value(batch, "register")["invalid_utf8"] == EXPECTED_INVALID

    # The customer's reader: every column of every row, and the query of the report.
    events = _read_everything(duckling, "events")
    assert len(events) == len(EVENT_ROWS)
    columns = [c.name for c in EVENTS.columns]
    by_column = {c: [row[columns.index(c)] for row in events] for c in EVENTS.text_columns}
    assert '{"p": "\ufffd"}' in by_column["properties"] and "pageview\ufffd" in by_column["event"]
    assert "user-\ufffd" in by_column["distinct_id"] and "a:\ufffd" in by_column["elements_chain"]
    assert "x" * (1 << 20) + "\ufffd" in by_column["group2_properties"]
    assert VALID.decode() in by_column["properties"] and VALID.decode() in by_column["person_properties"]
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM lake.posthog.events WHERE team_id = {TEAM} "
                           "AND distinct_id <> 'x'").fetchone() == (len(EVENT_ROWS),)
        current = con.execute(f"SELECT distinct_id, properties FROM lake.posthog.persons_current "
                              f"WHERE team_id = {TEAM} ORDER BY distinct_id").fetchall()
    assert current == [("person-ok", VALID.decode()), ("person-\ufffd", '{"email": "\ufffd"}')]
    persons = _read_everything(duckling, "persons")
    assert len(persons) == 2 and len(persons[0]) == len(PERSONS.columns)

    # The run's summary (`duckling run`): the same figures, in the table and in --json.
    capfd.readouterr()
    assert main(["run", f"{TEAM}_{DAY}", "--local"]) == 0
    assert ("5 text value(s) were not valid UTF-8 and were written with U+FFFD in place of each invalid sequence "
            "(event: 1, properties: 1, distinct_id: 1, elements_chain: 1, group2_properties: 1)") in \
        " ".join(capfd.readouterr().out.split())
    assert main(["run", f"{TEAM}_{DAY}", "--local", "--json"]) == 0
    out = capfd.readouterr().out
    summary, _ = json.JSONDecoder().raw_decode(out[out.index('{\n'):])
    assert summary["invalid_utf8"] == EXPECTED_INVALID and summary["outcome"] == "registered"

    # verify decodes every column and agrees: nothing differs.
    capfd.readouterr()
    assert main(["verify", str(TEAM), "--from", str(DAY), "--to", str(DAY)]) == 0
    assert "All days match" in capfd.readouterr().out
    assert main(["verify", str(TEAM), "--table", "persons"]) == 0

    # A persons day partition: its top-up export (the full export above covers every closed day, so it is
    # exported directly, and its file read as the customer's DuckDB reads it; not registered).
    _insert_person(ch, TEAM, b"later-" + TRUNCATED, b"{}", NOON + dt.timedelta(days=1))
    topup = export_partition(ch, DuckLakeHook().storage(duckling), PERSONS, Partition(TEAM, DAY + dt.timedelta(days=1)),
                             "utf8-topup")
    assert (topup.rows, topup.invalid_utf8) == (1, {"distinct_id": 1})
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        assert con.execute(f"SELECT distinct_id, properties FROM read_parquet({duckdb_literal(topup.files[0])})"
                           ).fetchall() == [("later-\ufffd", "{}")]


def _repair_runs(team: int) -> dict[tuple[str, str], dict]:
    """The team's ``reconcile__`` runs: (dag_id, run_id) → conf."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.run_id.like("reconcile\\_\\_%", escape="\\"),
                                                    DagRun.dag_id.like(f"%\\_team\\_{team}", escape="\\"))).all()
        return {(r.dag_id, r.run_id): r.conf for r in runs}


def _plant_unreadable_day(ch: ClickHouseHook, duckling, rows: int) -> None:
    """Replace the day's files with one ClickHouse writes without ``toValidUTF8`` (as releases before 0.2 did),
    registered by hand: DuckLake accepts it (it reads footers only); DuckDB cannot read its strings."""
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    partition = Partition(duckling.team_id, DAY)
    key = partition.object_key("events", "planted-by-hand")
    destination, params = storage.clickhouse_table_function(key)
    params.update({"team_id": duckling.team_id, "day": DAY.isoformat()})
    ch.execute(f"INSERT INTO FUNCTION {destination} {export_select(EVENTS, ch.database, valid_utf8=False)} "
               "SETTINGS output_format_parquet_string_as_string = 1, s3_truncate_on_insert = 1", params)
    with hook.attach(duckling, storage) as con:
        register_files(con, EVENTS, partition, [storage.uri(key)], rows, storage.data_path)


def test_a_file_the_reader_refuses_is_a_difference_that_verify_reports_and_reconciliation_repairs(
        stack, monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "0")
    monkeypatch.setenv("AIRFLOW__DUCKLING__RECONCILE_DAYS", "3")
    ch = ClickHouseHook()
    _assert_team_unused(ch, PLANTED)
    insert_events(ch, PLANTED, DAY, 30)
    _insert_event(ch, PLANTED, 0, {"properties": b'{"p": "' + STRAY + b'"}'})
    duckling = stack.new_duckling(PLANTED, "utf8plant", start_date=DAY)
    stack.use(duckling)
    assert run(PLANTED, DAY).state == "success"
    (before,) = compare_events(duckling, [DAY], ch)
    assert before.matches

    _plant_unreadable_day(ch, duckling, 31)
    with DuckLakeHook().attach(duckling, read_only=True) as con, pytest.raises(duckdb.Error, match="string encoding"):
        con.execute(f"SELECT properties FROM lake.posthog.events WHERE team_id = {PLANTED}").fetchall()

    # Reported: the rows match (31 on both sides), the reader does not.
    (planted,) = compare_events(duckling, [DAY], ch)
    assert not planted.matches and planted.lake.rows == planted.source.rows == 31
    assert "string encoding" in planted.lake.unreadable
    capsys.readouterr()
    assert main(["verify", str(PLANTED), "--from", str(DAY), "--to", str(DAY)]) == 1
    out = capsys.readouterr().out
    assert "unreadable" in out and str(DAY) in out
    assert main(["verify", str(PLANTED), "--from", str(DAY), "--to", str(DAY), "--json"]) == 1
    (reported,) = json.loads(capsys.readouterr().out)["differing_days"]
    assert reported["readable"] is False and reported["clickhouse_rows"] == reported["duckling_rows"] == 31

    # Repaired: the reconciliation re-runs that day (and only it); the re-run writes readable files.
    assert _reconcile_dag().test().state == "success"
    repairs = _repair_runs(PLANTED)
    assert repairs == {(f"duckling_events_backfill_team_{PLANTED}", f"reconcile__{PLANTED}_{DAY}"):
                       {"partition_key": f"{PLANTED}_{DAY}"}}
    for dag_id, run_id in repairs:
        assert _run_queued(dag_id, run_id) == "success"
    (after,) = compare_events(duckling, [DAY], ch)
    assert after.matches and after.lake.unreadable is None
    assert len(_read_everything(duckling, "events")) == 31
    assert main(["verify", str(PLANTED), "--from", str(DAY), "--to", str(DAY)]) == 0
