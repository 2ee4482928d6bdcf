"""The ``duckling`` command against the real test stack: output and exit codes of each subcommand, what it
wrote and what it did not. Teams 61-68 are this module's own (their events are seeded here), so the Airflow
runs it creates never mix with other modules' teams."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_provider_duckling.cli.main import main
from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import insert_events, rows_for, seed_persons
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling, load_registry
from tests.conftest import SESSION_DIR
from tests.support.runs import catalog_tables
from tests.support.services import free_port, strict_sts_server
from tests.support.stack import DAYS, use_strict_sts

YESTERDAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
EXPECTED_DAYS = (YESTERDAY - DAYS[0]).days + 1  # new ducklings start at DAYS[0]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``duckling argv…`` in this process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "\x1b[" not in out + err, "plain output must carry no ANSI codes"
    return code, out, err


def row(text: str, *first: str) -> list[str]:
    """The cells of the one table row whose first cells are ``first`` (plain output: split on spaces)."""
    rows = [line.split() for line in text.splitlines() if line.split()[:len(first)] == list(first)]
    assert len(rows) == 1, (first, text)
    return rows[0]


def line_with(text: str, *needles: str) -> str:
    """The one output line containing every needle."""
    lines = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, (needles, text)
    return lines[0]


@pytest.fixture
def registry(stack):
    """This test may change the shared registry: put back what was there."""
    before = dict(stack.ducklings)
    yield stack
    stack.use(*before.values())


@pytest.fixture(scope="module")
def counts(stack) -> dict[tuple[int, dt.date], int]:
    """Events for this module's teams 66 and 67 on the first three days (row counts differ per team-day)."""
    hook = ClickHouseHook()
    seeded = {}
    for team in (66, 67):
        for index, day in enumerate(DAYS[:3]):
            seeded[(team, day)] = rows_for(team, index)
            insert_events(hook, team, day, seeded[(team, day)])
    return seeded


def dag_runs(dag_id: str) -> list:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)).all()
        session.expunge_all()
    return list(runs)


# ---------------------------------------------------------------- installed, help, usage


def test_the_console_script_is_installed_and_answers(tmp_path):
    script = Path(sys.executable).with_name("duckling")
    assert script.exists(), "pip install -e . installs the duckling console script"
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    for command in ("catalog", "status", "verify", "run"):
        assert command in helped.stdout
    listing = tmp_path / "ducklings.yaml"
    listing.write_text(yaml.safe_dump({"ducklings": [{
        "team_id": 61, "bucket": "cli-installed", "bucket_region": "eu-west-1", "db_host": "catalog.internal",
        "db_name": "lake_61", "cross_account_role_arn": "arn:aws:iam::123456789012:role/x",
        "cross_account_external_id": "installed-ext-id-Secret61",
    }]}))
    listed = subprocess.run([script, "catalog", "list", "--registry", listing], capture_output=True, text=True,
                            timeout=120, env=os.environ)
    assert listed.returncode == 0, listed.stderr
    row = line_with(listed.stdout, "cli-installed")
    assert row.split()[:3] == ["61", "cli-installed", "eu-west-1"] and "pending discovery" in row
    assert "****et61" in row and "installed-ext-id-Secret61" not in listed.stdout + listed.stderr
    assert "\x1b[" not in listed.stdout
    assert subprocess.run([script, "status", "--bogus"], capture_output=True, timeout=60).returncode == 2


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert main(["catalog"]) == 2
    assert "validate" in capsys.readouterr().err


# ---------------------------------------------------------------- catalog add / list


ADD = ["catalog", "add", "--team-id", "61", "--bucket", "cli-acme-duckling", "--region", "us-east-1",
       "--db-host", "acme-catalog.internal", "--db-name", "acme_lake",
       "--role-arn", "arn:aws:iam::111122223333:role/duckling-writer", "--external-id", "acme-ext-id-Secret0061"]


def test_catalog_add_writes_a_valid_entry_and_refuses_mistakes_without_writing(tmp_path, capsys, monkeypatch):
    path = tmp_path / "ducklings.yaml"
    code, out, err = cli(capsys, *ADD, "--db-port", "6432", "--start-date", "2024-01-01", "--registry", path)
    assert (code, err) == (0, "")
    assert load_registry(path) == {61: Duckling(
        team_id=61, bucket="cli-acme-duckling", bucket_region="us-east-1", db_host="acme-catalog.internal",
        db_port=6432, db_name="acme_lake", cross_account_role_arn="arn:aws:iam::111122223333:role/duckling-writer",
        cross_account_external_id="acme-ext-id-Secret0061", start_date=dt.date(2024, 1, 1))}
    assert "Added team 61" in out and "duckling_events_backfill_team_61" in out and "catch up from 2024-01-01" in out
    assert "****0061" in line_with(out, "cli-acme-duckling") and "acme-ext-id-Secret0061" not in out
    written = path.read_bytes()

    refusals = [
        (["--team-id", "61", "--bucket", "cli-other"], "team 61 already has a duckling in ducklings.yaml"),
        (["--team-id", "62"], "bucket cli-acme-duckling is already team 61's"),
        (["--team-id", "62", "--bucket", "cli-b2", "--db-port", "6432"], "catalog acme_lake on acme-catalog.internal is already team 61's"),
        (["--team-id", "62", "--bucket", "Not_A_Bucket"], "invalid bucket"),
        (["--team-id", "62", "--bucket", "cli-b2", "--role-arn", "arn:aws:iam::1:role/short"], "invalid cross_account_role_arn"),
        (["--team-id", "62", "--bucket", "cli-b2", "--start-date", "2024-02-30"], "invalid start_date"),
        (["--team-id", "0", "--bucket", "cli-b2"], "invalid team id"),
    ]
    for changes, message in refusals:
        argv = [*ADD, "--db-port", "6431", "--start-date", "2024-01-01"]
        for flag, value in zip(changes[::2], changes[1::2], strict=True):
            argv[argv.index(flag) + 1] = value
        code, out, err = cli(capsys, *argv, "--registry", path)
        assert code == 2, (changes, out, err)
        assert message in err and "acme-ext-id-Secret0061" not in err
        assert path.read_bytes() == written
    code, _, err = cli(capsys, *ADD[:-2], "--registry", path)  # no --external-id
    assert code == 2 and "--external-id" in err
    assert cli(capsys, *ADD, "--db-port", "abc", "--registry", path)[0] == 2
    assert path.read_bytes() == written

    # The external id can come from stdin, out of shell history; list shows both entries, masked.
    monkeypatch.setattr(sys, "stdin", io.StringIO("piped-ext-id-Secret0062\n"))
    argv = list(ADD)
    for flag, value in (("--team-id", "62"), ("--bucket", "cli-b2"), ("--db-name", "b2_lake"), ("--external-id", "-")):
        argv[argv.index(flag) + 1] = value
    assert cli(capsys, *argv, "--registry", path)[0] == 0
    assert load_registry(path)[62].cross_account_external_id == "piped-ext-id-Secret0062"
    code, out, _ = cli(capsys, "catalog", "list", "--registry", path)
    assert code == 0 and "2 duckling(s)" in out
    first, second = line_with(out, "cli-acme-duckling"), line_with(out, "cli-b2")
    assert first.split()[:3] == ["61", "cli-acme-duckling", "us-east-1"] and "acme_lake on acme-catalog.internal:6432" in first
    assert "2024-01-01" in first and "pending discovery" in second and "****0062" in second
    assert "Secret0061" not in out and "Secret0062" not in out


def test_catalog_list_of_an_empty_registry(tmp_path, capsys):
    code, out, _ = cli(capsys, "catalog", "list", "--registry", tmp_path / "none.yaml")
    assert code == 0 and "No ducklings" in out


# ---------------------------------------------------------------- catalog validate


@pytest.fixture
def strict_sts():
    """A second moto with IAM enforced: user ``airflow`` may assume only ``role/allowed``."""
    with strict_sts_server(SESSION_DIR) as (url, key):
        yield url, key


@pytest.mark.slow
@pytest.mark.quick
def test_catalog_validate_names_each_broken_piece(registry, strict_sts, monkeypatch, capsys):
    stack = registry
    healthy = stack.new_duckling(61, "cli-ok")
    stack.use(healthy)
    code, out, err = cli(capsys, "catalog", "validate")
    assert (code, err) == (0, ""), out
    assert "ClickHouse: ok" in out and "All 1 duckling(s) reachable." in out
    assert row(out, "61") == ["61", "ok", "ok", "ok", "ok", "(new)"]

    url, key = strict_sts
    use_strict_sts(monkeypatch, url, key)
    broken = [
        dataclasses.replace(stack.new_duckling(62, "cli-nobucket"), bucket="cli-no-such-bucket-t62"),
        dataclasses.replace(stack.new_duckling(63, "cli-nodb"), db_name="cli_no_such_catalog"),
        dataclasses.replace(stack.new_duckling(64, "cli-denied"), catalog_conn_id="ducklake_strict",
                            cross_account_role_arn="arn:aws:iam::123456789012:role/not-allowed"),
        dataclasses.replace(stack.new_duckling(65, "cli-noconn"), catalog_conn_id="ducklake_missing"),
    ]
    stack.use(healthy, *broken)
    code, out, err = cli(capsys, "catalog", "validate")
    assert (code, err) == (1, "")
    problems = out[out.index("4 problem(s):"):].splitlines()[1:]
    assert problems == [
        "team 62: bucket: s3://cli-no-such-bucket-t62 does not exist",
        problems[1],
        "team 64: role: cannot assume role arn:aws:iam::123456789012:role/not-allowed for team 64: AccessDenied "
        "(check the role's trust policy and the external id in the registry)",
        "team 65: connection: DuckLake connection 'ducklake_missing' is not defined (create it in Admin → Connections, "
        "or set AIRFLOW_CONN_DUCKLAKE_MISSING)",
    ]
    assert problems[1].startswith("team 63: catalog: cannot reach the duckling catalog of team 63")
    assert 'database "cli_no_such_catalog" does not exist' in problems[1]
    # The table marks each broken piece; what could not be checked after it is shown as such, not as a problem.
    assert row(out, "62") == ["62", "ok", "ok", "FAILED", "ok", "(new)"]
    assert row(out, "64") == ["64", "ok", "FAILED", "–", "ok", "(new)"]
    assert row(out, "65") == ["65", "FAILED", "–", "–", "–"]
    for d in (healthy, *broken):
        assert d.cross_account_external_id not in out

    # Only the teams asked for; an unknown team is a usage error.
    code, out, _ = cli(capsys, "catalog", "validate", "61", "62")
    assert code == 1 and "1 problem(s):" in out and "team 63" not in out
    code, _, err = cli(capsys, "catalog", "validate", "999")
    assert code == 2 and "team 999 has no duckling" in err

    # ClickHouse, shared by every team: a missing connection, then one that points at nothing.
    monkeypatch.delenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT")
    code, out, _ = cli(capsys, "catalog", "validate", "61")
    assert code == 1
    assert "all teams (61): clickhouse: ClickHouse connection 'clickhouse_default' is not defined" in out
    monkeypatch.setenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT", json.dumps({
        "conn_type": "clickhouse", "host": "127.0.0.1", "port": free_port(), "login": "default",
        "password": "wrong-ch-pw-Secret0064", "schema": "posthog", "extra": {"connect_timeout": 2}}))
    code, out, _ = cli(capsys, "catalog", "validate", "61")
    assert code == 1
    assert "all teams (61): clickhouse: cannot connect to ClickHouse (clickhouse_default)" in line_with(out, "clickhouse:")
    assert "wrong-ch-pw-Secret0064" not in out


# ---------------------------------------------------------------- run, status


@pytest.mark.slow
@pytest.mark.quick
def test_run_local_lands_rows_then_status_counts_days(registry, counts, capsys):
    stack = registry
    duckling = stack.new_duckling(66, "cli-status")
    stack.use(duckling)
    for day in DAYS[:2]:
        code, out, err = cli(capsys, "run", f"66_{day}", "--local")
        assert code == 0, out + err
        assert row(out, f"66_{day}")[:5] == [f"66_{day}", "success", "registered", str(counts[(66, day)]), "1"]
    assert lake_day_counts(duckling, "events") == {day: counts[(66, day)] for day in DAYS[:2]}

    # A day that fails in Airflow (ClickHouse refuses an unknown setting) exits 1 and names the task.
    code, out, _ = cli(capsys, "run", f"66_{DAYS[2]}", "--local", "--clickhouse-settings", '{"no_such_setting_at_all": 1}')
    assert code == 1
    assert row(out, f"66_{DAYS[2]}")[1] == "failed" and "Failed task(s): export, register" in out

    # A dry run writes nothing and does not count for the day: the failure stays visible.
    keys = stack.keys(duckling.bucket)
    code, out, _ = cli(capsys, "run", f"66_{DAYS[2]}", "--local", "--dry-run")
    assert code == 0 and "dry run: nothing written" in " ".join(row(out, f"66_{DAYS[2]}"))
    assert stack.keys(duckling.bucket) == keys

    code, out, err = cli(capsys, "status", "66")
    assert (code, err) == (0, "")
    events, persons = row(out, "66", "events"), row(out, "66", "persons")
    # team table since expected registered failed running last-success… coverage
    assert events[:7] == ["66", "events", DAYS[0].isoformat(), str(EXPECTED_DAYS), "2", "1", "0"]
    assert f"(day {DAYS[1]})" in " ".join(row(out, "66", "events")) and events[-1].endswith("%")
    assert persons[:7] == ["66", "persons", DAYS[0].isoformat(), str(EXPECTED_DAYS), "0", "0", "0"]
    assert "never" in persons and "0.0%" in persons
    assert f"team 66 events: failed days {DAYS[2]}" in out
    code, out, _ = cli(capsys, "status", "66", "--no-lake")
    assert code == 0 and row(out, "66", "events")[:7] == ["66", "events", DAYS[0].isoformat(),
                                                                           str(EXPECTED_DAYS), "–", "1", "0"]

    # Trigger mode: a queued manual run with the partition and the changed options, nothing else.
    dag_id = "duckling_events_backfill_team_66"
    before = {r.run_id for r in dag_runs(dag_id)}
    code, out, err = cli(capsys, "run", f"66_{DAYS[3]}", "--no-cleanup", "--skip-schema-validation",
                         "--clickhouse-settings", '{"max_threads": 2}')
    assert (code, err) == (0, "")
    (new,) = [r for r in dag_runs(dag_id) if r.run_id not in before]
    assert new.run_id.startswith(f"manual__duckling-cli__66_{DAYS[3]}__") and new.run_id in out
    assert new.conf == {"partition_key": f"66_{DAYS[3]}", "clickhouse_settings": {"max_threads": 2},
                        "skip_schema_validation": True, "cleanup_existing_partition_data": False}
    assert (str(new.run_type), str(new.state)) in {("manual", "queued"), ("DagRunType.MANUAL", "DagRunState.QUEUED")}
    code, out, _ = cli(capsys, "status", "66", "--no-lake")
    assert row(out, "66", "events")[5:7] == ["1", "1"]  # failed 1, running (queued) 1

    # --wait follows the run; with no scheduler in the test stack it gives up at the timeout, exit 1.
    code, out, _ = cli(capsys, "run", f"66_{DAYS[4]}", "--wait", "--timeout", "1", "--poll-interval", "0.2")
    assert code == 1 and "is still queued after 1 s (is a scheduler running?)" in out
    assert stack.keys(duckling.bucket, f"backfill/events/team_id=66/year=2024/month=03/day={DAYS[3]:%d}/") == []

    # A range of days, moved as one batch in this process; its run id holds no ".." (Airflow refuses it).
    key = f"66_{DAYS[0]}..{DAYS[2]}"
    code, out, err = cli(capsys, "run", key, "--local")
    assert code == 0, out + err
    assert row(out, key)[:4] == [key, "success", "registered", str(sum(counts[(66, d)] for d in DAYS[:3]))]
    assert {d: n for d, n in lake_day_counts(duckling, "events").items() if d in DAYS[:3]} == {
        d: counts[(66, d)] for d in DAYS[:3]}
    code, out, _ = cli(capsys, "run", key)
    assert code == 0 and f"manual__duckling-cli__66_{DAYS[0]}_to_{DAYS[2]}__" in out


def test_run_refuses_bad_input_and_writes_nothing(registry, capsys):
    stack = registry
    duckling = stack.new_duckling(68, "cli-refuse")
    stack.use(duckling)
    future = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)).isoformat()
    cases = [
        (["68-2024-03-08"], "invalid partition key '68-2024-03-08'"),
        ([f"68_{future}"], "has not ended"),
        (["68_2024-02-30"], "invalid day"),
        (["68_2024-03-08..2024-03-01"], "the last day is before the first"),
        (["68_2023-01-01..2024-03-01"], "more than 366 days in one run"),
        ([f"68_2024-03-01..{future}"], "has not ended"),
        (["68_2024-03-01....2024-03-02"], "invalid day range"),
        (["999_2024-03-08"], "team 999 has no duckling in the registry"),
        (["68_2024-03-08", "--clickhouse-settings", '{"max_threads; DROP": 1}'], "invalid ClickHouse setting name"),
        (["68_2024-03-08", "--clickhouse-settings", "[1, 2]"], "clickhouse_settings must be a mapping"),
        (["68_2024-03-08", "--full-export"], "--full-export applies to --table persons only"),
        (["68_2024-03-08", "--delete-tables"], "add --yes to confirm"),
        (["68_2024-03-08", "--table", "sessions"], "invalid choice: 'sessions'"),
        (["68_2024-03-08", "--local", "--wait"], "not allowed with argument"),
    ]
    for argv, message in cases:
        code, out, err = cli(capsys, "run", *argv)
        assert code == 2, (argv, out, err)
        assert message in err, (argv, err)
    assert stack.keys(duckling.bucket) == []
    assert catalog_tables(stack, duckling) == 0
    assert dag_runs("duckling_events_backfill_team_68") == [] and dag_runs("duckling_events_backfill_team_999") == []


# ---------------------------------------------------------------- verify


@pytest.mark.slow
@pytest.mark.quick
def test_verify_finds_exactly_the_corrupted_days(registry, counts, capsys, monkeypatch):
    stack = registry
    duckling = stack.new_duckling(67, "cli-verify")
    stack.use(duckling)
    for day in DAYS[:3]:
        assert cli(capsys, "run", f"67_{day}", "--local")[0] == 0
    # The default first day is the team's start date; DAYS[3:] have no events on either side.
    code, out, err = cli(capsys, "verify", "67", "--to", DAYS[4])
    assert (code, err) == (0, "")
    assert f"All days match: team 67 events, {DAYS[0]} … {DAYS[4]} (5 days), rows and checksums." in out

    # Corrupt the lake in committed transactions: rows deleted from one day, a timestamp moved within another.
    start = dt.datetime.combine(DAYS[1], dt.time(), tzinfo=dt.UTC)
    with DuckLakeHook().attach(duckling) as con:
        con.execute("BEGIN")
        (deleted,) = con.execute(
            "DELETE FROM lake.posthog.events WHERE team_id = 67 AND timestamp >= ? AND timestamp < ? "
            "AND event = '$pageview'", [start, start + dt.timedelta(days=1)]).fetchone()
        con.execute("COMMIT")
        con.execute("BEGIN")
        con.execute("UPDATE lake.posthog.events SET timestamp = timestamp + INTERVAL 1 SECOND WHERE team_id = 67 "
                    "AND uuid = (SELECT min(uuid) FROM lake.posthog.events WHERE team_id = 67 AND timestamp >= ? "
                    "AND timestamp < ?)", [start + dt.timedelta(days=1), start + dt.timedelta(days=2)])
        con.execute("COMMIT")
    assert deleted > 0
    code, out, err = cli(capsys, "verify", "67", "--from", DAYS[0], "--to", DAYS[4])
    assert (code, err) == (1, "")
    n1, n2 = counts[(67, DAYS[1])], counts[(67, DAYS[2])]
    assert row(out, str(DAYS[1])) == [str(DAYS[1]), str(n1), str(n1 - deleted), f"-{deleted}", "differs"]
    assert row(out, str(DAYS[2])) == [str(DAYS[2]), str(n2), str(n2), "+0", "differs"]
    for day in (DAYS[0], DAYS[3], DAYS[4]):
        assert day.isoformat() not in out.replace(f"{DAYS[0]} … {DAYS[4]}", "")
    assert f"2 of 5 day(s) differ. Re-run one with: duckling run 67_{DAYS[1]}" in out

    # On a terminal the same command draws a progress bar over the days, and colours.
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, captured = Terminal(), sys.stdout
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["verify", "67", "--from", str(DAYS[0]), "--to", str(DAYS[4])]) == 1
    monkeypatch.setattr(sys, "stdout", captured)
    drawn = terminal.getvalue()
    assert "team 67 events" in drawn and "━" in drawn and "\x1b[" in drawn and "Days that differ" in drawn

    # Re-running the day through the CLI repairs it; verify then passes for that day.
    assert cli(capsys, "run", f"67_{DAYS[1]}", "--local")[0] == 0
    assert cli(capsys, "verify", "67", "--from", DAYS[1], "--to", DAYS[1])[0] == 0

    for argv, message in [
        (["67", "--from", DAYS[2], "--to", DAYS[0]], f"--from {DAYS[2]} is after --to {DAYS[0]}"),
        (["67", "--to", "2999-01-01"], "has not ended"),
        (["999"], "team 999 has no duckling"),
        (["67", "--table", "persons", "--from", DAYS[0]], "--from/--to apply to events"),
    ]:
        code, _, err = cli(capsys, "verify", *argv)
        assert code == 2 and message in err, (argv, err)


@pytest.mark.slow
def test_verify_persons_compares_current_persons(registry, capsys):
    stack = registry
    seed_persons(ClickHouseHook(), [67], DAYS[:2], per_day=4)
    duckling = stack.new_duckling(67, "cli-persons")
    stack.use(duckling)
    code, out, _ = cli(capsys, "verify", "67", "--table", "persons")
    assert code == 1 and line_with(out, "duckling (persons_current)").split()[-1] == "0"
    assert cli(capsys, "run", f"67_{DAYS[0]}", "--table", "persons", "--full-export", "--local")[0] == 0
    code, out, _ = cli(capsys, "verify", "67", "--table", "persons")
    assert code == 0 and "Persons match" in out
    assert line_with(out, "clickhouse (current)").split()[-1] == line_with(out, "persons_current").split()[-1] == "16"
    first = "(SELECT min(distinct_id) FROM lake.posthog.persons WHERE team_id = 67)"
    last = "(SELECT max(distinct_id) FROM lake.posthog.persons WHERE team_id = 67)"
    # Same rows and versions, but one distinct_id points at another person: a difference.
    with DuckLakeHook().attach(duckling) as con:
        con.execute(f"UPDATE lake.posthog.persons SET id = (SELECT id FROM lake.posthog.persons WHERE distinct_id = {last}) "
                    f"WHERE team_id = 67 AND distinct_id = {first}")
    code, out, _ = cli(capsys, "verify", "67", "--table", "persons")
    assert code == 1 and "a distinct_id maps to another person, or stale properties" in out
    # Stale properties alone: a difference too.
    assert cli(capsys, "run", f"67_{DAYS[0]}", "--table", "persons", "--full-export", "--local")[0] == 0
    assert cli(capsys, "verify", "67", "--table", "persons")[0] == 0
    with DuckLakeHook().attach(duckling) as con:
        con.execute(f"UPDATE lake.posthog.persons SET properties = '{{}}' WHERE team_id = 67 AND distinct_id = {first}")
    code, out, _ = cli(capsys, "verify", "67", "--table", "persons")
    assert code == 1 and "Persons differ (checksums" in out
    with DuckLakeHook().attach(duckling) as con:
        con.execute(f"DELETE FROM lake.posthog.persons WHERE team_id = 67 AND distinct_id = {first}")
    code, out, _ = cli(capsys, "verify", "67", "--table", "persons")
    assert code == 1 and "Persons differ (rows)" in out


def test_setup_creates_and_resizes_the_export_pool(airflow_db, capsys):
    from airflow.models.pool import Pool

    code, out, _ = cli(capsys, "setup", "--export-slots", "3")
    assert code == 0 and "Export pool duckling_exports: 3 slots" in out
    assert Pool.get_pool("duckling_exports").slots == 3
    code, out, _ = cli(capsys, "setup", "--export-slots", "5")
    assert code == 0 and Pool.get_pool("duckling_exports").slots == 5


# ---------------------------------------------------------------- secrets at every log level

_SECRET_FIELD = re.compile(r"(?i)(SecretAccessKey|SessionToken|aws_secret_access_key|aws_session_token)\W{1,6}[A-Za-z0-9/+=]{8,}")


@pytest.mark.slow
def test_no_secret_in_any_command_output_with_debug_logging(registry):
    """``duckling -v catalog validate`` in a fresh process with Airflow's log level at DEBUG: botocore's debug
    lines (the AssumeRole request and response) and every other library's must not carry the external id,
    the base AWS secret, the catalog password or the session's secret key and token."""
    from tests.support.stack import BASE_AWS_SECRET, CATALOG_PASSWORD

    stack = registry
    duckling = stack.new_duckling(66, "cli-debug")
    stack.use(duckling)
    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG"}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from airflow_provider_duckling.cli.main import main; sys.exit(main(sys.argv[1:]))",
         "-v", "catalog", "validate", "66"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "[debug" in output  # debug logging really was on (structlog prints the level so)
    for secret in (duckling.cross_account_external_id, BASE_AWS_SECRET, CATALOG_PASSWORD):
        assert secret not in output
    assert not _SECRET_FIELD.search(output), _SECRET_FIELD.search(output).group(0)[:40]
