"""ClickHouse workload control: every statement of an export attempt is named (query_id, log_comment), a
killed task kills its ClickHouse statement, resource limits reach the engine, and a statement that runs out
of time fails the attempt with advice instead of being repeated.

Real engines: ClickHouse is chdb behind its HTTP interface (tests/support/chdb_http_server.py), here a
server of this module's own, started with its emulated ``system.query_log`` (chdb has none; the server
writes one row per request, with the request's query_id and log_comment settings) and with the
client's query ids mapped into chdb's real ``system.processes`` and ``KILL QUERY`` (chdb assigns its own
ids). Slow statements are made slow by the engine itself: ``max_local_read_bandwidth`` throttles its
MergeTree reads. moto S3/STS, PostgreSQL catalogs and Airflow (dag.test) are the suite's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_duckling.access.workload import Attempt
from airflow_provider_duckling.common.errors import ConfigurationError, QueryTimeoutError
from airflow_provider_duckling.demo.sample_data import create_schema, insert_events, seed_persons
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.export import export_partition, merged_settings
from tests.support.chdb_http_server import start_chdb_http_server
from tests.support.runs import catalog_tables, logged_text, run
from tests.support.stack import CLICKHOUSE_PASSWORD

TEAM_EVENTS, TEAM_PERSONS, TEAM_KILL, TEAM_TIMEOUT, TEAM_READ_TIMEOUT, TEAM_TASK_TIMEOUT = 220, 221, 222, 223, 224, 225
DAY = dt.date(2024, 3, 8)
SLOW_ROWS = 150_000
#: Bytes per second ClickHouse may read from its local disk: what makes a team-day's export take seconds.
THROTTLE = 1_000_000
_HANDSHAKE = re.compile(r"\A(SELECT version\(\), timezone\(\)|SELECT name, value, readonly FROM system\.settings|SELECT 1 AS check)")
_QUERY_ID = re.compile(
    r"\Aduckling-(?P<team>\d+)-(?P<table>events|persons)-(?P<day>\d{8}|full)-try(?P<try>\d+)-(?P<nonce>[0-9a-f]{12})"
    r"-(?P<seq>\d{2})-(?P<step>[a-z_]+)\Z"
)


@pytest.fixture(scope="module")
def clickhouse(stack, tmp_path_factory):
    """This module's own ClickHouse (with a query log), made the ``clickhouse_default`` connection."""
    server = start_chdb_http_server(tmp_path_factory.mktemp("wl-chdb"), password=CLICKHOUSE_PASSWORD, query_log=True)
    patch = pytest.MonkeyPatch()
    conn = json.loads(stack.connection_env()["AIRFLOW_CONN_CLICKHOUSE_DEFAULT"])
    patch.setenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT", json.dumps({**conn, "port": server.port}))
    try:
        hook = ClickHouseHook()
        create_schema(hook)
        insert_events(hook, TEAM_EVENTS, DAY, 300)
        seed_persons(hook, [TEAM_PERSONS], [DAY], per_day=5)
        for team in (TEAM_KILL, TEAM_TIMEOUT, TEAM_READ_TIMEOUT, TEAM_TASK_TIMEOUT):
            insert_events(hook, team, DAY, SLOW_ROWS)
        yield server
    finally:
        patch.undo()
        server.stop()


def _rows(sql: str, params: dict | None = None) -> list[tuple]:
    return ClickHouseHook().query_rows(sql, params)


def _log_since(mark: str) -> list[tuple[str, str, str, str, int]]:
    """(query_id, log_comment, query, type, exception_code) of every request logged after ``mark``, but this
    test's own reads of the log."""
    rows = _rows(
        "SELECT query_id, log_comment, query, type, exception_code FROM system.query_log "
        "WHERE event_time > toDateTime64({mark:String}, 6, 'UTC') ORDER BY event_time",
        {"mark": mark},
    )
    return [row for row in rows if "FROM system.query_log" not in row[2]]


def _mark() -> str:
    return str(_rows("SELECT toString(max(event_time)) FROM system.query_log")[0][0])


def _attempt_statements(rows, team: int) -> list[tuple[re.Match, dict, str]]:
    """The logged statements of ``team``'s export attempts: (query id match, log_comment, type)."""
    out = []
    for query_id, comment, _, kind, _ in rows:
        match = _QUERY_ID.match(query_id)
        if match and int(match["team"]) == team:
            out.append((match, json.loads(comment), kind))
    return out


def _running(prefix: str) -> list[tuple[str, float]]:
    return _rows("SELECT query_id, elapsed FROM system.processes WHERE startsWith(query_id, {p:String})", {"p": prefix})


def test_every_statement_of_an_export_attempt_carries_its_query_id_and_log_comment(stack, clickhouse):
    """A whole events run and a whole persons run (its first: the full export) through Airflow: every
    statement ClickHouse logged in that time is either clickhouse-connect's connection hand-shake or one of
    the attempt's statements, each with its own query id (attempt prefix, sequence, step) and a log_comment
    naming app, team, table, partition, day, DAG, run, try and step."""
    stack.new_duckling(TEAM_EVENTS, "wl-ids")
    stack.new_duckling(TEAM_PERSONS, "wl-ids-p")
    mark = _mark()
    events_run = run(TEAM_EVENTS, DAY)
    persons_run = run(TEAM_PERSONS, DAY, table="persons")
    assert (events_run.state, persons_run.state) == ("success", "success")

    logged = _log_since(mark)
    unnamed = [q for query_id, _, q, _, _ in logged if not _QUERY_ID.match(query_id) and not _HANDSHAKE.match(q)]
    assert unnamed == []  # nothing but the hand-shake goes without the attempt's name
    for team, dag_run, table, day, steps in (
        (TEAM_EVENTS, events_run, "events", DAY.isoformat(), ["count", "export", "read_back"]),
        (TEAM_PERSONS, persons_run, "persons", None, ["persons_as_of", "count", "export", "read_back"]),
    ):
        statements = _attempt_statements(logged, team)
        assert [m["step"] for m, _, _ in statements] == steps
        assert {m["nonce"] for m, _, _ in statements} == {statements[0][0]["nonce"]}  # one attempt
        assert [int(m["seq"]) for m, _, _ in statements] == list(range(1, len(steps) + 1))
        assert all(kind == "QueryFinish" for _, _, kind in statements)
        for match, comment, _ in statements:
            assert comment == {
                "app": "airflow-provider-duckling", "team_id": team, "table": table,
                "partition": f"{team}_{day or 'full'}", "day": day, "dag_id": dag_run.dag_id,
                "run_id": dag_run.run_id, "try": 1, "step": match["step"],
            }
            assert match["table"] == table and match["try"] == "1"
    ids = [query_id for query_id, *_ in logged if _QUERY_ID.match(query_id)]
    assert len(ids) == len(set(ids)) == 7


def test_resource_limits_from_duckling_settings_yield_to_the_run(monkeypatch):
    """[duckling] export_max_threads / export_max_memory_usage are every export's defaults; the run's
    clickhouse_settings beat them; the row settings still come last; bad values are one line each."""
    monkeypatch.setenv("AIRFLOW__DUCKLING__EXPORT_MAX_THREADS", "3")
    monkeypatch.setenv("AIRFLOW__DUCKLING__EXPORT_MAX_MEMORY_USAGE", "2GiB")
    merged = merged_settings(None)
    assert (merged["max_threads"], merged["max_memory_usage"]) == (3, 2 << 30)
    merged = merged_settings({"max_threads": 8})
    assert (merged["max_threads"], merged["max_memory_usage"]) == (8, 2 << 30)
    assert merged["limit"] == 0 and list(merged)[-1] == "empty_result_for_aggregation_by_empty_set"
    monkeypatch.setenv("AIRFLOW__DUCKLING__EXPORT_MAX_MEMORY_USAGE", "lots")
    with pytest.raises(ConfigurationError, match=r"^\[duckling\] export_max_memory_usage must be bytes or a size like 8GiB, got 'lots'$"):
        merged_settings(None)
    monkeypatch.delenv("AIRFLOW__DUCKLING__EXPORT_MAX_MEMORY_USAGE")
    monkeypatch.setenv("AIRFLOW__DUCKLING__EXPORT_MAX_THREADS", "0")
    with pytest.raises(ConfigurationError, match=r"export_max_threads must be between 1 and 1024"):
        merged_settings(None)
    monkeypatch.delenv("AIRFLOW__DUCKLING__EXPORT_MAX_THREADS")
    with pytest.raises(ConfigurationError, match="log_comment is set by the provider"):
        merged_settings({"log_comment": "mine"})


@pytest.mark.slow
def test_a_killed_export_task_kills_its_clickhouse_query_and_registers_nothing(stack, clickhouse, tmp_path):
    """A real process runs the team's DAG (dag.test: Airflow's task runner, whose SIGTERM handler calls
    on_kill, as when a task is marked failed or its worker stops it; task_retries = 0 there, so the killed
    attempt is the last, as for a task marked failed). While ClickHouse runs the attempt's
    export (throttled reads), the engine's system.processes shows it under the attempt's query id with the
    resource limits in force: [duckling]'s memory limit, the run's max_threads over [duckling]'s. SIGTERM:
    on_kill sends KILL QUERY … SYNC; the export ends with QUERY_WAS_CANCELLED, no statement of the attempt
    is left running or sent after, and nothing is registered (the catalog is never even initialised).

    What the engine here cannot show: chdb assigns its own query ids, so the test server maps the request's
    query_id into system.processes and KILL QUERY (tests/support/chdb_http_server.py); a real ClickHouse
    does this itself. With the embedded engine (no host, demo mode) there are no query ids and on_kill only
    stops further statements: a Python signal handler cannot run while chdb executes in the same thread."""
    duckling = stack.new_duckling(TEAM_KILL, "wl-kill")
    env = dict(os.environ, AIRFLOW__DUCKLING__TASK_RETRIES="0", AIRFLOW__DUCKLING__EXPORT_MAX_THREADS="3",
               AIRFLOW__DUCKLING__EXPORT_MAX_MEMORY_USAGE="3GiB")
    settings = {"max_threads": 2, "max_local_read_bandwidth": THROTTLE}
    script = (
        "import datetime as dt, sys\n"
        "from tests.support.runs import run\n"
        f"dag_run = run({TEAM_KILL}, dt.date.fromisoformat({DAY.isoformat()!r}), clickhouse_settings={settings!r})\n"
        "print('RUN_STATE', dag_run.state, flush=True)\n"
    )
    mark = _mark()
    out = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=Path(__file__).parents[1],
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    prefix = f"duckling-{TEAM_KILL}-events-{DAY:%Y%m%d}-try1-"
    try:
        deadline = time.monotonic() + 120
        export = []
        while not export and time.monotonic() < deadline and worker.poll() is None:
            export = _rows(
                "SELECT query_id, Settings['max_threads'], Settings['max_memory_usage'] FROM system.processes "
                "WHERE startsWith(query_id, {p:String}) AND endsWith(query_id, '-export')", {"p": prefix})
            time.sleep(0.1)
        assert export, "the export statement never ran"
        ((query_id, threads, memory),) = export
        assert (threads, memory) == ("2", str(3 << 30))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(120) == 0
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    out.seek(0)
    text = out.read()
    assert "RUN_STATE failed" in text
    assert f"event=export_cancelled query_id={query_id}" in text
    assert _running(prefix) == []
    logged = _log_since(mark)
    mine = [(q_id, kind, code) for q_id, _, _, kind, code in logged if q_id.startswith(prefix)]
    assert mine[-1] == (query_id, "ExceptionWhileProcessing", 394)  # the export, cancelled; nothing after it
    assert [q for _, _, q, _, _ in logged if q.startswith("KILL QUERY")] == [
        "KILL QUERY WHERE query_id = {query_id:String} SYNC"]
    assert catalog_tables(stack, duckling) == 0  # register never ran: nothing registered


def test_timeout_exceeded_fails_the_attempt_with_advice_and_is_not_retried(stack, clickhouse, caplog, capfd):
    """ClickHouse stops the statement at max_execution_time (TIMEOUT_EXCEEDED, 159): the task fails at once
    (Airflow's retries are not used: one attempt in the query log) with one line saying what to raise."""
    caplog.set_level(logging.INFO)
    stack.new_duckling(TEAM_TIMEOUT, "wl-timeout")
    mark = _mark()
    dag_run = run(TEAM_TIMEOUT, DAY, clickhouse_settings={"max_execution_time": 1, "max_local_read_bandwidth": THROTTLE})
    assert dag_run.state == "failed"
    statements = _attempt_statements(_log_since(mark), TEAM_TIMEOUT)
    assert {m["try"] for m, _, _ in statements} == {"1"}  # one attempt: not repeated
    assert statements[-1][2] == "ExceptionWhileProcessing"
    failures = [line for line in logged_text(caplog, capfd).splitlines() if "event=task_failed" in line]
    assert len(failures) == 1
    assert "retryable=false reason=QueryTimeoutError: ClickHouse stopped the " in failures[0]
    assert "TIMEOUT_EXCEEDED" in failures[0] and "Raise max_execution_time in the run's clickhouse_settings" in failures[0]
    assert _running(f"duckling-{TEAM_TIMEOUT}-") == []


def test_a_read_timeout_on_a_running_statement_kills_it_and_fails_with_advice(stack, clickhouse, monkeypatch):
    """The HTTP client stops waiting (the connection's send_receive_timeout, 2 s) while ClickHouse still runs
    the export: the statement is killed (nothing of the attempt is left in system.processes) and the error is
    QueryTimeoutError (not retried), naming the timeout to raise. A server that does not answer at all is the
    retried case (tests/test_faults.py, a SIGSTOPped ClickHouse)."""
    duckling = stack.new_duckling(TEAM_READ_TIMEOUT, "wl-read-timeout")
    conn = json.loads(os.environ["AIRFLOW_CONN_CLICKHOUSE_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT", json.dumps({**conn, "extra": {"send_receive_timeout": 2}}))
    attempt = Attempt(TEAM_READ_TIMEOUT, "events", Partition(TEAM_READ_TIMEOUT, DAY).key, "dag", "manual__x", 1)
    storage = DuckLakeHook().storage(duckling, will_attach=False)
    with pytest.raises(QueryTimeoutError) as raised:
        export_partition(ClickHouseHook(attempt=attempt), storage, EVENTS, Partition(TEAM_READ_TIMEOUT, DAY), "rt",
                         {"max_local_read_bandwidth": THROTTLE // 4})
    message = str(raised.value)
    assert re.match(r"ClickHouse had been running the (count|export) of 224_2024-03-08 \(events\) for \d+ s when the "
                    r"client stopped waiting \(the clickhouse connection's send_receive_timeout, 2 s\); the query was killed\.",
                    message), message
    assert "is not retried" in message
    assert _running(attempt.query_id_prefix) == []


def test_airflow_execution_timeout_leaves_the_statement_to_on_kill_which_kills_it(stack, clickhouse):
    """Airflow's execution timeout (its own SIGALRM context manager) interrupts the export while ClickHouse
    runs a statement: the interruption reaches Airflow as AirflowTaskTimeout (not turned into a ClickHouse
    error, not waiting for the count's thread), the hook still knows the statement ClickHouse runs, and
    what Airflow then calls, on_kill → cancel(), kills it; no later statement is sent."""
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    from airflow_provider_duckling.hooks.clickhouse import ClickHouseCancelledError

    duckling = stack.new_duckling(TEAM_TASK_TIMEOUT, "wl-task-timeout")
    attempt = Attempt(TEAM_TASK_TIMEOUT, "events", Partition(TEAM_TASK_TIMEOUT, DAY).key, "dag", "manual__y", 1)
    hook = ClickHouseHook(attempt=attempt)
    storage = DuckLakeHook().storage(duckling, will_attach=False)
    with pytest.raises(AirflowTaskTimeout), timeout(2):
        export_partition(hook, storage, EVENTS, Partition(TEAM_TASK_TIMEOUT, DAY), "tt",
                         {"max_local_read_bandwidth": THROTTLE // 4}, preflight=lambda: None)
    running = hook.running_query_id
    assert running is not None and running.startswith(attempt.query_id_prefix)
    assert [query_id for query_id, _ in _running(attempt.query_id_prefix)] == [running]
    assert hook.cancel() == running
    assert _running(attempt.query_id_prefix) == []
    with pytest.raises(ClickHouseCancelledError, match="the task was killed"):
        hook.query_rows("SELECT 1")
    assert stack.keys(duckling.bucket) == []  # nothing was written
