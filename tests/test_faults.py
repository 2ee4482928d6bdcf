"""Faults injected into real processes at the worst moment converge: the retry (or the next run) leaves
exactly ClickHouse's rows, nothing lost, nothing doubled, and the failure is one clear log line."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from airflow_provider_duckling.demo.sample_data import clickhouse_scope_rows, insert_events
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.export import export_partition
from airflow_provider_duckling.transfer.lake import count_rows, register_files
from tests.support.faulty_proxy import FaultyProxy
from tests.support.runs import logged_text, run
from tests.support.stack import DAYS

BIG_TEAM = 31


def _live_files(duckling, day) -> list[str]:
    prefix = Partition(duckling.team_id, day).prefix("events")
    with DuckLakeHook().attach(duckling) as con:
        files = con.execute("SELECT data_file FROM ducklake_list_files('lake', 'events', schema => 'posthog')").fetchall()
    return [f for (f,) in files if prefix in f]


def _exact(duckling, day) -> None:
    expected = clickhouse_scope_rows(ClickHouseHook(), "events", duckling.team_id, day)
    with DuckLakeHook().attach(duckling) as con:
        assert count_rows(con, _events(), Partition(duckling.team_id, day)) == expected
    assert len(_live_files(duckling, day)) == 1


def _events():
    from airflow_provider_duckling.domain.tables import EVENTS

    return EVENTS


@pytest.fixture(scope="module")
def big_day(stack):
    insert_events(ClickHouseHook(), BIG_TEAM, DAYS[0], 150_000)
    return DAYS[0]


@pytest.mark.slow
@pytest.mark.parametrize("clickhouse_retries", [None, 1], ids=["clickhouse-rides-it-out", "airflow-retry"])
def test_s3_down_mid_export_converges(stack, big_day, monkeypatch, caplog, capfd, clickhouse_retries):
    """S3 unreachable for 2 s once a megabyte of the export is on its way. With ClickHouse's own S3 retries
    the attempt survives; with them off, the attempt fails, says so in one line, and the task retry
    writes a new file that is swapped in."""
    proxy = FaultyProxy(stack.moto.port)
    try:
        conn = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
        conn["extra"]["s3_endpoint_url"] = proxy.url
        monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_DEFAULT", json.dumps(conn))
        duckling = stack.new_duckling(BIG_TEAM, f"fault-s3-{clickhouse_retries or 0}")
        proxy.arm(after_bytes=1_000_000, down_for=2.0)
        settings = {"s3_retry_attempts": clickhouse_retries} if clickhouse_retries else {}
        assert run(BIG_TEAM, big_day, clickhouse_settings=settings).state == "success"
        assert proxy.cuts == 1
        _exact(duckling, big_day)
        if clickhouse_retries:
            text = logged_text(caplog, capfd)
            failures = [line for line in text.splitlines() if "event=task_failed" in line]
            assert failures and all("retryable=true reason=ClickHouseError" in line for line in failures)
    finally:
        proxy.close()


def test_postgres_down_mid_commit_never_half_visible_and_converges(stack):
    proxy = FaultyProxy(stack.postgres.port)
    try:
        direct = stack.new_duckling(2, "fault-pg")
        via_proxy = dataclasses.replace(direct, db_port=proxy.port)
        day = DAYS[1]
        expected = clickhouse_scope_rows(ClickHouseHook(), "events", 2, day)
        storage = DuckLakeHook().storage(direct)
        partition = Partition(2, day)

        def export(token):
            return export_partition(ClickHouseHook(), storage, _events(), partition, token)

        for token in ("v0", "v1"):  # the first also initialises the catalog; measure the second
            exported = export(token)
            start = proxy.upstream_bytes
            with DuckLakeHook().attach(via_proxy, storage) as con:
                register_files(con, _events(), partition, exported.files, exported.rows, storage.data_path)
            traffic = proxy.upstream_bytes - start  # what one attach + registration sends to PostgreSQL

        failures = 0
        for fraction in (0.35, 0.6, 0.8, 0.95):
            exported = export(f"cut{int(fraction * 100)}")
            proxy.arm(after_bytes=int(traffic * fraction), down_for=0.5)
            try:
                with DuckLakeHook().attach(via_proxy, storage) as con:
                    register_files(con, _events(), partition, exported.files, exported.rows, storage.data_path)
            except Exception:
                failures += 1
            proxy.disarm()
            # Whatever the moment of the cut, readers see the old day or the new one, never 0 or 2x.
            with DuckLakeHook().attach(direct, storage) as con:
                assert count_rows(con, _events(), partition) == expected
            time.sleep(0.6)
            # The retry of the same files converges (a commit that did land is recognised, not repeated).
            with DuckLakeHook().attach(via_proxy, storage) as con:
                register_files(con, _events(), partition, exported.files, exported.rows, storage.data_path)
            _exact(direct, day)
            assert _live_files(direct, day) == exported.files
        assert failures >= 2, "the cuts should have broken most registrations"
    finally:
        proxy.close()


@pytest.mark.parametrize("moment", ["between export and register", "during register"])
def test_worker_sigkilled_then_rerun_converges(stack, moment):
    duckling = stack.new_duckling(3, f"fault-kill-{'a' if moment.startswith('between') else 'b'}")
    day = DAYS[2]
    pause = "2" if moment.startswith("between") else "0"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_script", "3", day.isoformat(), "killed", "--pause", pause],
        env=dict(os.environ), stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    wanted = "EXPORTED" if moment.startswith("between") else "REGISTERING"
    for line in worker.stdout:
        if line.strip() == wanted:
            break
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    assert worker.returncode == -signal.SIGKILL
    # The next run (a new attempt writes a new file) converges on the exact rows.
    assert run(3, day).state == "success"
    _exact(duckling, day)


def test_clickhouse_hanging_times_out_and_the_retry_converges(stack, monkeypatch, caplog, capfd):
    """ClickHouse stops answering (SIGSTOP) for 10 s; with a 2 s client timeout the export attempts fail with
    one retryable line each, and a later attempt, once ClickHouse is back, lands exactly."""
    import threading

    conn = json.loads(os.environ["AIRFLOW_CONN_CLICKHOUSE_DEFAULT"])
    conn["extra"] = {"send_receive_timeout": 2}
    monkeypatch.setenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT", json.dumps(conn))
    duckling = stack.new_duckling(1, "fault-ch")
    os.kill(stack.clickhouse_pid, signal.SIGSTOP)
    resume = threading.Timer(10.0, os.kill, args=(stack.clickhouse_pid, signal.SIGCONT))
    resume.start()
    try:
        assert run(1, DAYS[3]).state == "success"
    finally:
        resume.cancel()
        os.kill(stack.clickhouse_pid, signal.SIGCONT)
    failures = [line for line in logged_text(caplog, capfd).splitlines() if "event=task_failed" in line]
    assert failures and all("retryable=true reason=ClickHouseError" in line for line in failures)
    _exact(duckling, DAYS[3])
