"""Freshness metrics, the freshness check and the failure notifier (issue 14, point 1), on the real stack.

Metrics go through Airflow's own client to a real StatsD listener: a UDP socket on loopback that this test
opens, with ``[metrics] statsd_on`` / ``statsd_host`` / ``statsd_port`` set the way a deployment sets them
(``AIRFLOW__METRICS__*``), and the client built the way a task runner builds it at start-up. The notifier
is a real ``BaseNotifier`` subclass (below) that appends the context it receives to a file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import socket

import pytest
from airflow.sdk import BaseNotifier

from airflow_provider_duckling.common.errors import ConfigurationError
from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.health.freshness import (
    TableFreshness,
    keyed_run_day,
    lagging,
    last_closed_day,
    summarize_runs,
    table_freshness,
)
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.scheduling.ops_dags import FRESHNESS_DAG_ID
from tests.support.runs import failed_scheduled_run, logged_text, run, team_dag

TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=n) for n in (3, 2, 1)]  # the last three closed days, oldest first


class FileNotifier(BaseNotifier):
    """A notifier that appends what it was told (one JSON line per call) to ``path``."""

    template_fields = ("path",)

    def __init__(self, path: str, prefix: str = "") -> None:
        super().__init__()
        self.path = path
        self.prefix = prefix

    def notify(self, context) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps({
                "prefix": self.prefix, "dag_id": context["dag"].dag_id, "task_id": context["ti"].task_id,
                "team_id": getattr(context["task"], "team_id", None), "run_id": context["ti"].run_id,
                "exception": str(context.get("exception") or ""),
            }) + "\n")


NOTIFIER = f"{__name__}.{FileNotifier.__name__}"


# ------------------------------------------------------------------ the computation


def test_lag_counts_closed_days_not_held_and_a_completed_rerun_clears_a_failed_day():
    last = dt.date(2024, 3, 10)
    assert table_freshness(1, "events", dt.date(2024, 3, 1), last, [dt.date(2024, 3, 8), None]).lag_days == 2
    assert table_freshness(1, "events", dt.date(2024, 3, 1), last, [dt.date(2024, 3, 10)]).lag_days == 0
    assert table_freshness(1, "events", dt.date(2024, 3, 8), last, []).lag_days == 3  # nothing held: 8, 9, 10
    assert table_freshness(1, "events", dt.date(2024, 3, 12), last, []).lag_days == 0  # starts later
    assert table_freshness(1, "events", None, last, []).lag_days is None  # start not discovered: not judged
    # A day "held" after the last closed day (a row from the future) does not hide the lag.
    assert table_freshness(1, "events", dt.date(2024, 3, 1), last, [dt.date(2024, 3, 11), dt.date(2024, 3, 9)]).lag_days == 1

    d6, d8, d9, d10 = (dt.date(2024, 3, n) for n in (6, 8, 9, 10))
    summary = summarize_runs({
        d9: [{"export": "failed", "register": "upstream_failed"}],
        # failed, then its later pass completed: done
        d8: [{"export": "failed", "register": "upstream_failed"},
             {"wait_for_late_events": "success", "export": "success", "register": "success"}],
        d10: [{"export": "running", "register": None}],
        d6: [{"export": "skipped", "register": "skipped"}],  # a persons day the full export covers: done
    })
    assert summary.failed == {d9}
    assert summary.succeeded == {d8, d6}
    assert summary.unfinished == {d10}
    assert keyed_run_day("later_pass__1_2024-03-08") == keyed_run_day("reconcile__1_2024-03-08") == d8
    assert keyed_run_day("scheduled__2024-03-09T00:00:00+00:00") is None  # named by run_after, not the day

    report = [TableFreshness(1, "events", dt.date(2024, 3, 1), last, dt.date(2024, 3, 7)),
              TableFreshness(2, "events", dt.date(2024, 3, 1), last, dt.date(2024, 3, 9))]
    assert [f.team_id for f in lagging(report, 2)] == [1]
    now = dt.datetime(2024, 3, 11, 1, 0, tzinfo=dt.UTC)
    assert last_closed_day(now, dt.timedelta(minutes=120)) == dt.date(2024, 3, 9)  # the 10th has not settled
    assert last_closed_day(now, dt.timedelta(0)) == dt.date(2024, 3, 10)


# ------------------------------------------------------------------ the notifier setting


@pytest.mark.parametrize(("path", "kwargs", "message"), [
    ("not a path", "{}", "must be a dotted path like package.module.Class"),
    ("no_such_module_260.Notifier", "{}", "cannot import module 'no_such_module_260' (ModuleNotFoundError)"),
    ("json.JSONDecoder", "{}", "'json.JSONDecoder' is not a notifier class"),
    (NOTIFIER, "[1, 2]", "failure_notifier_kwargs must be one JSON object"),
    (NOTIFIER, '{"nope": 1}', "failure_notifier_kwargs: FileNotifier refused them (TypeError)"),
])
def test_a_bad_notifier_setting_fails_the_parse_with_one_line(monkeypatch, path, kwargs, message):
    from airflow_provider_duckling.scheduling.dag_factory import default_args
    from airflow_provider_duckling.scheduling.ops_dags import build_ops_dags

    monkeypatch.setenv("AIRFLOW__DUCKLING__FAILURE_NOTIFIER", path)
    monkeypatch.setenv("AIRFLOW__DUCKLING__FAILURE_NOTIFIER_KWARGS", kwargs)
    for parse in (default_args, build_ops_dags):
        with pytest.raises(ConfigurationError) as error:
            parse()
        assert message in str(error.value)
        assert "\n" not in str(error.value)


def test_the_notifier_is_every_project_task_s_failure_callback(monkeypatch, tmp_path):
    from airflow_provider_duckling.scheduling.dag_factory import default_args
    from airflow_provider_duckling.scheduling.ops_dags import build_ops_dags

    assert "on_failure_callback" not in default_args()  # none configured: none set
    monkeypatch.setenv("AIRFLOW__DUCKLING__FAILURE_NOTIFIER", NOTIFIER)
    monkeypatch.setenv("AIRFLOW__DUCKLING__FAILURE_NOTIFIER_KWARGS", json.dumps({"path": str(tmp_path / "x")}))
    notifier = default_args()["on_failure_callback"]
    assert isinstance(notifier, FileNotifier) and notifier.path == str(tmp_path / "x")
    for dag in build_ops_dags().values():
        for task in dag.tasks:
            assert task.on_failure_callback == [notifier], (dag.dag_id, task.task_id)
    assert not (tmp_path / "x").exists()  # nothing is sent while parsing


def test_a_configured_notifier_keeps_every_dag_version_stable(tmp_path):
    """Two parses in separate processes, the notifier on: every DAG serializes identically (a callback is
    stored as ``has_on_failure_callback``, never as an object with its address)."""
    import os
    import subprocess
    import sys

    from airflow_provider_duckling.registry.catalog import Duckling, write_registry
    from airflow_provider_duckling.scheduling.airflow_env import DAGS_FOLDER, REPO_ROOT

    registry = tmp_path / "ducklings.yaml"
    write_registry([Duckling(264, "alerts-t264", "us-east-1", "127.0.0.1", "lake_alerts_t264",
                             "arn:aws:iam::123456789012:role/alerts", "ext-id-alerts", start_date=dt.date(2025, 1, 1))],
                   registry)
    env = {**os.environ, "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
           "AIRFLOW__DUCKLING__STATE_PATH": str(tmp_path / "state.json"),
           "AIRFLOW__DUCKLING__LAST_GOOD_PATH": str(tmp_path / "last_good.json"),
           "AIRFLOW__DUCKLING__FAILURE_NOTIFIER": NOTIFIER,
           "AIRFLOW__DUCKLING__FAILURE_NOTIFIER_KWARGS": json.dumps({"path": str(tmp_path / "notified")}),
           "PYTHONPATH": str(REPO_ROOT)}
    parses = []
    for n in range(2):
        out = tmp_path / f"{n}.json"
        result = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "support" / "serialize_dags.py"),
                                 str(DAGS_FOLDER), str(out)], env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        parses.append(json.loads(out.read_text()))
    first, second = parses
    assert first == second
    assert " object at 0x" not in json.dumps(first)
    for dag_id in ("duckling_events_backfill_team_264", FRESHNESS_DAG_ID):
        tasks = first[dag_id]["data"]["dag"]["tasks"]
        assert tasks and all(t["__var"].get("has_on_failure_callback") for t in tasks), dag_id
    assert not (tmp_path / "notified").exists()


# ------------------------------------------------------------------ on the stack


@pytest.fixture
def statsd(monkeypatch):
    """A StatsD listener on loopback, and Airflow's metrics client pointed at it as a task runner builds it
    (``stats.initialize`` with the configured factory); afterwards, metrics off again."""
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.getsockname()[1]))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    try:
        yield listener
    finally:
        stats.initialize(factory=NoStatsLogger, export_legacy_names=False)
        listener.close()


def _datagrams(listener: socket.socket) -> list[str]:
    """Every metric line received so far (the client sends one per datagram, unbatched)."""
    lines = []
    while True:
        try:
            data, _ = listener.recvfrom(65536)
        except TimeoutError:
            return lines
        lines.extend(data.decode().splitlines())


def _ducklake_metrics(lines: list[str], team: int) -> dict[str, tuple[float, str]]:
    """``{name: (value, type)}`` of the duckling metrics of ``team`` (counters summed, gauges last)."""
    out: dict[str, tuple[float, str]] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        if not name.startswith("airflow.duckling.") or f".team_{team}." not in name:
            continue
        value, kind = rest.split("|")[:2]
        previous = out.get(name, (0.0, kind))[0] if kind == "c" else 0.0
        out[name] = (previous + float(value), kind)
    return out


def test_statsd_receives_moved_rows_and_bytes_and_every_table_s_freshness(stack, statsd, monkeypatch, caplog, capfd):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "0")
    monkeypatch.setenv("AIRFLOW__DUCKLING__FRESHNESS_MAX_LAG_DAYS", "1")
    ch = ClickHouseHook()
    for index, day in enumerate(DAYS):
        insert_events(ch, 260, day, 120 + index)
        insert_events(ch, 261, day, 90 + index)
    fresh = stack.new_duckling(260, "fresh", start_date=DAYS[0])
    late = stack.new_duckling(261, "fresh", start_date=DAYS[0])
    stack.use(fresh, late)
    for day in DAYS[:2]:  # team 260's events: the last closed day is missing (lag 1, allowed)
        assert run(260, day).state == "success"
    team_dag(261)  # team 261 has no run yet: its DAG must be serialised for the failed one
    failed_scheduled_run("duckling_events_backfill_team_261", DAYS[1])  # team 261: nothing held, one failure

    sizes = {key: stack.s3().head_object(Bucket=fresh.bucket, Key=key)["ContentLength"] for key in stack.keys(fresh.bucket)}
    received = _ducklake_metrics(_datagrams(statsd), 260)
    assert received == {
        "airflow.duckling.registered_partitions.team_260.events": (2, "c"),
        "airflow.duckling.registered_rows.team_260.events": (120 + 121, "c"),
        "airflow.duckling.registered_bytes.team_260.events": (sum(sizes.values()), "c"),
    }
    assert len(sizes) == 2 and sum(sizes.values()) > 0

    dag = _ops_dag(FRESHNESS_DAG_ID)
    assert dag.test().state == "failed"  # two tables lag more than one day
    lines = _datagrams(statsd)
    epoch = int(dt.datetime.combine(DAYS[1], dt.time(), tzinfo=dt.UTC).timestamp())
    assert _ducklake_metrics(lines, 260) == {
        "airflow.duckling.latest_day.team_260.events": (epoch, "g"),
        "airflow.duckling.lag_days.team_260.events": (1, "g"),
        "airflow.duckling.failed_days.team_260.events": (0, "g"),
        "airflow.duckling.latest_day.team_260.persons": (0, "g"),
        "airflow.duckling.lag_days.team_260.persons": (3, "g"),
        "airflow.duckling.failed_days.team_260.persons": (0, "g"),
    }
    assert _ducklake_metrics(lines, 261) == {
        "airflow.duckling.latest_day.team_261.events": (0, "g"),
        "airflow.duckling.lag_days.team_261.events": (3, "g"),
        "airflow.duckling.failed_days.team_261.events": (1, "g"),
        "airflow.duckling.latest_day.team_261.persons": (0, "g"),
        "airflow.duckling.lag_days.team_261.persons": (3, "g"),
        "airflow.duckling.failed_days.team_261.persons": (0, "g"),
    }
    text = logged_text(caplog, capfd)
    assert "3 duckling table(s) lag more than 1 day(s)" in text
    assert f"team 261 events: 3 day(s) behind {DAYS[2]} (holds nothing, 1 failed day(s))" in text
    assert f"team 260 persons: 3 day(s) behind {DAYS[2]}" in text
    assert "team 260 events: 1 day(s)" not in text  # within the limit: not listed

    # A paused duckling lags by design: it is measured, not alerted on.
    stack.use(fresh, dataclasses.replace(late, paused=True))
    assert _ops_dag(FRESHNESS_DAG_ID).test().state == "failed"
    assert _ducklake_metrics(_datagrams(statsd), 261)["airflow.duckling.lag_days.team_261.events"] == (3, "g")
    text = logged_text(caplog, capfd)
    assert "1 duckling table(s) lag more than 1 day(s)" in text and "team 261" not in text.split("1 duckling table(s)")[1]
    assert f"team 260 persons: 3 day(s) behind {DAYS[2]}" in text.split("1 duckling table(s)")[1]

    monkeypatch.setenv("AIRFLOW__DUCKLING__FRESHNESS_MAX_LAG_DAYS", "3")
    assert _ops_dag(FRESHNESS_DAG_ID).test().state == "success"  # nobody lags more than 3 days


def test_a_failing_task_calls_the_configured_notifier_with_its_context(stack, monkeypatch, tmp_path):
    out = tmp_path / "notified.jsonl"
    monkeypatch.setenv("AIRFLOW__DUCKLING__FAILURE_NOTIFIER", NOTIFIER)
    monkeypatch.setenv("AIRFLOW__DUCKLING__FAILURE_NOTIFIER_KWARGS", json.dumps({"path": str(out), "prefix": "p"}))
    insert_events(ClickHouseHook(), 262, DAYS[0], 50)
    stack.use(stack.new_duckling(262, "notify", start_date=DAYS[0]))

    assert run(262, DAYS[0]).state == "success"
    assert not out.exists()  # success: no notification
    # A partition of another team is refused at once (a mistake: no retries), and the run fails.
    assert run(262, DAYS[0], partition_key=f"263_{DAYS[0]}").state == "failed"
    (call,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert call["prefix"] == "p"
    assert (call["dag_id"], call["task_id"], call["team_id"]) == ("duckling_events_backfill_team_262", "export", 262)
    assert call["run_id"].startswith("manual__")
    assert "263" in call["exception"]
    assert team_dag(262).get_task("register").on_failure_callback  # the other tasks carry it too


@pytest.mark.slow
def test_real_workers_send_metrics_and_call_the_notifier(stack, tmp_path):
    """Through a real scheduler, dag-processor, api-server and LocalExecutor: each task runs in its own
    worker process, which builds Airflow's metrics client from ``[metrics]`` at start-up and loads the
    notifier from ``[duckling]``, both given as environment variables."""
    import os
    import time

    from airflow_provider_duckling.registry.catalog import Duckling, write_registry
    from airflow_provider_duckling.scheduling.airflow_env import REPO_ROOT
    from tests.conftest import SESSION_DIR
    from tests.support.airflow_stack import make_airflow_stack, new_metadata_db

    day = DAYS[2]
    insert_events(ClickHouseHook(), 265, day, 88)
    good = stack.new_duckling(265, "workers", start_date=day)
    # Its bucket and catalog database were never created: its export fails (no retries here).
    broken = Duckling(266, "workers-missing-t266", "us-east-1", "127.0.0.1", "lake_workers_missing_t266",
                      "arn:aws:iam::123456789012:role/missing", "ext-id-missing", db_port=stack.postgres.port,
                      start_date=day)
    home = SESSION_DIR / "fresh-workers"
    registry = home / "ducklings.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    write_registry([good, broken], registry)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    notified = tmp_path / "notified.jsonl"
    airflow = make_airflow_stack(home / "home", dict(os.environ), new_metadata_db(stack.postgres, "airflow_fresh"), {
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__STATE_PATH": str(home / "state.json"),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
        "AIRFLOW__DUCKLING__TASK_RETRIES": "0",
        "AIRFLOW__DUCKLING__FAILURE_NOTIFIER": NOTIFIER,
        "AIRFLOW__DUCKLING__FAILURE_NOTIFIER_KWARGS": json.dumps({"path": str(notified), "prefix": "worker"}),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "PYTHONPATH": str(REPO_ROOT),  # the notifier class lives in this test module
    })
    lines: list[str] = []
    airflow.start()
    try:
        def run_states(dag_id: str, run_id: str = "%") -> set[str]:
            return {r[0] for r in _meta(stack, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id LIKE %s",
                                        dag_id, run_id)}

        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and not (
                run_states("duckling_events_backfill_team_265") == {"success"}
                and run_states("duckling_events_backfill_team_266") == {"failed"}):
            lines += _datagrams(listener)
        assert run_states("duckling_events_backfill_team_265") == {"success"}, airflow.log_tail("scheduler")
        assert run_states("duckling_events_backfill_team_266") == {"failed"}, airflow.log_tail("scheduler")
        result = airflow.airflow("dags", "trigger", FRESHNESS_DAG_ID, "--run-id", "freshness_probe")
        assert result.returncode == 0, result.stderr[-2000:]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not run_states(FRESHNESS_DAG_ID, "freshness_probe") & {"success", "failed"}:
            lines += _datagrams(listener)
        # Nobody lags more than [duckling] freshness_max_lag_days (2).
        assert run_states(FRESHNESS_DAG_ID, "freshness_probe") == {"success"}, airflow.log_tail("scheduler")
        lines += _datagrams(listener)
    finally:
        airflow.stop()
        listener.close()

    (key,) = stack.keys(good.bucket, "backfill/events/")
    size = stack.s3().head_object(Bucket=good.bucket, Key=key)["ContentLength"]
    good_metrics = _ducklake_metrics(lines, 265)
    assert good_metrics["airflow.duckling.registered_rows.team_265.events"] == (88, "c")
    assert good_metrics["airflow.duckling.registered_bytes.team_265.events"] == (size, "c")
    assert good_metrics["airflow.duckling.lag_days.team_265.events"] == (0, "g")
    broken_metrics = _ducklake_metrics(lines, 266)
    assert broken_metrics["airflow.duckling.lag_days.team_266.events"] == (1, "g")
    assert broken_metrics["airflow.duckling.failed_days.team_266.events"] == (1, "g")
    assert any(line.startswith("airflow.ti.finish.") for line in lines)  # Airflow's own metrics, same client

    calls = [json.loads(line) for line in notified.read_text().splitlines()]
    assert {(c["prefix"], c["dag_id"], c["task_id"], c["team_id"]) for c in calls} >= {
        ("worker", "duckling_events_backfill_team_266", "export", 266)}
    # Team 265 never failed. (Operations DAGs that the stack's shutdown interrupts are notified too.)
    assert not [c for c in calls if c["team_id"] == 265], calls


def _meta(stack, sql: str, *args) -> list[tuple]:
    """Read the real-worker test's Airflow metadata database."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user=stack.postgres.user,
                            password=stack.postgres.password, dbname="airflow_fresh")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def _ops_dag(dag_id: str):
    from airflow_provider_duckling.scheduling.airflow_env import load_dags

    bag = load_dags()
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)
