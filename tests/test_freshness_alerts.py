"""Freshness metrics, the freshness check and the failure notifier (issue 14, point 1), on the real stack;
the onboarding grace of a new duckling (issue 21, point 6).

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
from airflow_provider_duckling.domain.partitions import dag_id_for
from airflow_provider_duckling.health.freshness import (
    TableFreshness,
    describe,
    keyed_run_day,
    lagging,
    last_closed_day,
    onboarding,
    onboarding_until,
    summarize_runs,
    table_freshness,
)
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry import settings
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


def test_a_new_duckling_s_tables_are_onboarding_until_the_grace_after_discovery_first_saw_it():
    now = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)
    grace = dt.timedelta(hours=6)
    seen = now - dt.timedelta(hours=1)
    assert onboarding_until(seen, now, grace) == dt.datetime(2026, 12, 6, 15, 0, tzinfo=dt.UTC)
    assert onboarding_until(None, now, grace) == now + grace  # not seen by discovery yet: new, its grace not begun
    assert onboarding_until(now - grace, now, grace) is None  # the grace has just ended
    assert onboarding_until(now - dt.timedelta(days=30), now, grace) is None
    assert onboarding_until(None, now, dt.timedelta(0)) is None  # 0 turns the grace off, for unseen ducklings too

    # The alert: ten days of discovered history, nothing held yet, and a run that failed meanwhile.
    last, start, failed = dt.date(2026, 12, 5), dt.date(2026, 11, 26), [dt.date(2026, 12, 5)]
    new = table_freshness(1, "events", start, last, [None], failed, onboarding_until(seen, now, grace), seen)
    assert (new.lag_days, new.onboarding) == (10, True)  # still measured
    assert lagging([new], 2) == [] and onboarding([new]) == [new]
    assert describe(new) == "team 1 events: onboarding (grace until 2026-12-06 15:00 UTC; holds nothing, 1 failed day(s))"
    assert new.as_dict()["grace_until"] == "2026-12-06T15:00+00:00"
    assert new.as_dict()["first_seen"] == "2026-12-06T09:00+00:00"
    unseen = table_freshness(2, "events", start, last, [], (), onboarding_until(None, now, grace), None)
    assert lagging([unseen], 2) == []
    assert describe(unseen) == ("team 2 events: onboarding (grace until at least 2026-12-06 16:00 UTC, not seen by "
                                "discovery yet; holds nothing)")

    # Six hours after it was first seen, the same table alerts as before.
    later = now + dt.timedelta(hours=5)
    old = table_freshness(1, "events", start, last, [None], failed, onboarding_until(seen, later, grace), seen)
    assert (old.onboarding, old.as_dict()["grace_until"]) == (False, None)
    assert lagging([old, unseen], 2) == [old] and onboarding([old, unseen]) == [unseen]
    assert describe(old) == "team 1 events: 10 day(s) behind 2026-12-05 (holds nothing, 1 failed day(s))"


def test_the_grace_setting_defaults_to_six_hours_and_zero_turns_it_off(monkeypatch):
    assert settings.onboarding_grace() == dt.timedelta(hours=6)
    monkeypatch.setenv("AIRFLOW__DUCKLING__ONBOARDING_GRACE_HOURS", "0")
    assert settings.onboarding_grace() == dt.timedelta(0)
    monkeypatch.setenv("AIRFLOW__DUCKLING__ONBOARDING_GRACE_HOURS", "24")
    assert settings.onboarding_grace() == dt.timedelta(days=1)
    for bad, message in (("-1", "must be between 0 and 8784"), ("6h", "must be a whole number")):
        monkeypatch.setenv("AIRFLOW__DUCKLING__ONBOARDING_GRACE_HOURS", bad)
        with pytest.raises(ConfigurationError, match=message):
            settings.onboarding_grace()


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


def test_statsd_receives_moved_rows_and_bytes_and_every_table_s_freshness(stack, statsd, state_file, monkeypatch,
                                                                          caplog, capfd):
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
    _discovery_pass([fresh, late], dt.datetime.now(dt.UTC) - dt.timedelta(days=1))  # long past their grace
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


@pytest.fixture
def state_file(monkeypatch, tmp_path):
    """A discovery state file of the test's own (``[duckling] state_path``): what it records of first sightings
    does not reach other tests' DAGs."""
    path = tmp_path / "duckling_state.json"
    monkeypatch.setenv("AIRFLOW__DUCKLING__STATE_PATH", str(path))
    return path


def _discovery_pass(ducklings, when: dt.datetime):
    """The real discovery pass over exactly these registry entries, as if it had run at ``when``: it finds the
    start of those without one in ClickHouse and records when each was first seen."""
    from airflow_provider_duckling.scheduling.discovery import run_discovery

    return run_discovery({d.team_id: d for d in ducklings}, ClickHouseHook, now=when,
                         floor=settings.start_date_floor(), rediscovery_days=0)


def _notified(monkeypatch, path) -> None:
    monkeypatch.setenv("AIRFLOW__DUCKLING__FAILURE_NOTIFIER", NOTIFIER)
    monkeypatch.setenv("AIRFLOW__DUCKLING__FAILURE_NOTIFIER_KWARGS", json.dumps({"path": str(path)}))


def test_new_ducklings_are_onboarding_and_the_check_passes_without_a_notification(
        stack, state_file, monkeypatch, tmp_path, caplog, capfd):
    """Issue 21's start of a deployment: a duckling discovery has just found (history discovered, nothing held,
    a run already failed) and one added after the last discovery pass. Both lag past the limit; neither is
    judged until its grace ends."""
    caplog.set_level(logging.INFO)
    out = tmp_path / "notified.jsonl"
    _notified(monkeypatch, out)
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "0")
    monkeypatch.setenv("AIRFLOW__DUCKLING__FRESHNESS_MAX_LAG_DAYS", "1")
    for day in DAYS:
        insert_events(ClickHouseHook(), 267, day, 40)
    found = stack.new_duckling(267, "onboard", start_date=None)
    stack.use(found)
    seen = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    state = _discovery_pass([found], seen)
    assert state.start_dates["events"][267] == DAYS[0] and state.first_seen == {267: seen}
    unseen = stack.new_duckling(268, "onboard", start_date=DAYS[0])  # in the registry since the last pass
    stack.use(found, unseen)
    team_dag(267)  # serialised, for the failed run
    failed_scheduled_run(dag_id_for("events", 267), DAYS[1])  # its own failure callback reports that one

    assert _ops_dag(FRESHNESS_DAG_ID).test().state == "success"
    text = logged_text(caplog, capfd)
    line = next(line for line in text.splitlines() if "event=freshness_onboarding" in line)
    assert "event=freshness_onboarding tables=4 not judged yet" in line
    until = f"{seen + dt.timedelta(hours=6):%Y-%m-%d %H:%M} UTC"
    assert f"team 267 events: onboarding (grace until {until}; holds nothing, 1 failed day(s))" in line
    assert f"team 267 persons: onboarding (grace until {until}; holds nothing)" in line
    assert line.count("not seen by discovery yet; holds nothing)") == 2  # team 268's two tables
    assert "team 268 events: onboarding (grace until at least " in line
    assert "lag more than" not in text
    assert not out.exists()  # no alert for either


def test_after_its_grace_a_duckling_that_holds_nothing_fails_the_check_naming_it(
        stack, state_file, monkeypatch, tmp_path, caplog, capfd):
    caplog.set_level(logging.INFO)
    out = tmp_path / "notified.jsonl"
    _notified(monkeypatch, out)
    monkeypatch.setenv("AIRFLOW__DUCKLING__SETTLE_MINUTES", "0")  # freshness_max_lag_days: its default, 2
    for day in DAYS:
        insert_events(ClickHouseHook(), 269, day, 40)
    stalled = stack.new_duckling(269, "graced", start_date=None)
    stack.use(stalled)
    # First seen seven hours ago (grace: 6): its top-ups have had their chance and moved nothing.
    state = _discovery_pass([stalled], dt.datetime.now(dt.UTC) - dt.timedelta(hours=7))
    assert state.start_dates["events"][269] == DAYS[0]

    assert _ops_dag(FRESHNESS_DAG_ID).test().state == "failed"
    text = logged_text(caplog, capfd)
    # Persons start at the last closed day when first seen (seven hours ago): at most two days behind, allowed.
    assert "1 duckling table(s) lag more than 2 day(s)" in text
    assert f"team 269 events: 3 day(s) behind {DAYS[2]} (holds nothing)" in text
    assert "event=freshness_onboarding" not in text and "onboarding (grace until" not in text
    (call,) = [json.loads(line) for line in out.read_text().splitlines()]  # one alert: the check's
    assert (call["dag_id"], call["task_id"]) == (FRESHNESS_DAG_ID, "check_freshness")
    assert f"team 269 events: 3 day(s) behind {DAYS[2]}" in call["exception"]


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

        def caught_up(dag_id: str) -> bool:  # its runs reach yesterday (history batches, then the days)
            midnight = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(), tzinfo=dt.UTC)
            return bool(_meta(stack, "SELECT count(*) FROM dag_run WHERE dag_id = %s AND state = 'success' "
                                     "AND data_interval_end = %s", dag_id, midnight)[0][0])

        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and not (
                run_states("duckling_events_backfill_team_265") == {"success"}
                and caught_up("duckling_events_backfill_team_265")
                and run_states("duckling_events_backfill_team_266") == {"failed"}):
            lines += _datagrams(listener)
        assert run_states("duckling_events_backfill_team_265") == {"success"}, airflow.log_tail("scheduler")
        assert run_states("duckling_events_backfill_team_266") == {"failed"}, airflow.log_tail("scheduler")
        result = airflow.airflow("dags", "trigger", FRESHNESS_DAG_ID, "--run-id", "freshness_probe")
        assert result.returncode == 0, result.stderr[-2000:]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not run_states(FRESHNESS_DAG_ID, "freshness_probe") & {"success", "failed"}:
            lines += _datagrams(listener)
        # Nobody lags more than [duckling] freshness_max_lag_days (2); both ducklings are new (onboarding) too.
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
