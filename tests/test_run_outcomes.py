"""No "success" for work not done (issue 23, point 5), against the real stack.

Every way a run ends without moving its day says so: in the ``duckling run`` table (state ``skipped``, the
outcome's phrase), in ``--json`` (``state``, ``outcome``, ``moved``), in the task log (one
``event=run_outcome`` line) and in the exit code; and a day before the DAG's start is refused by ``--local``
(exit 2, one line naming the start and how to move it, nothing written) and moved by a triggered run.
Teams 731-736 are this module's own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging

import pytest
from rich.console import Console

from airflow_provider_duckling.cli.main import main
from airflow_provider_duckling.cli.run import report
from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import insert_events, seed_persons
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from tests.support.runs import catalog_tables, snapshot_id, team_dag
from tests.support.stack import DAYS

BEFORE, PERSONS, PAUSED, DRY, EXPORT_ONLY = 731, 732, 733, 734, 735


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run ``duckling argv…`` in this process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, dict]:
    """The exit code and the one JSON document ``--json`` printed (Airflow's first log lines of the process
    may precede it on the captured stdout)."""
    code, out, _ = cli(capsys, *argv, "--json")
    return code, json.loads(out[out.index("{\n"):])


def row(text: str, key: str) -> str:
    """The one table row of ``key`` (plain output)."""
    rows = [line for line in text.splitlines() if line.split()[:1] == [key]]
    assert len(rows) == 1, (key, text)
    return rows[0]


def outcome_lines(caplog: pytest.LogCaptureFixture, key: str) -> list[str]:
    """The task log's ``event=run_outcome`` lines of ``key`` so far (then forgotten)."""
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith(f"event=run_outcome partition={key} ")]
    caplog.clear()
    return lines


def dag_runs(dag_id: str) -> list:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)).all()
        for dag_run in runs:
            dag_run.task_ids = sorted(ti.task_id for ti in dag_run.get_task_instances(session=session))
        session.expunge_all()
    return list(runs)


@pytest.fixture
def registry(stack, caplog):
    """This test may change the shared registry: put back what was there."""
    caplog.set_level(logging.INFO, logger="airflow_provider_duckling.operators")
    before = dict(stack.ducklings)
    yield stack
    stack.use(*before.values())


# ---------------------------------------------------------------- before the DAG's start


@pytest.mark.slow
def test_a_day_before_the_registry_start_date_is_refused_locally_and_moved_by_a_trigger(registry, capsys, caplog):
    stack = registry
    duckling = stack.new_duckling(BEFORE, "outcome-before", start_date=DAYS[2])
    stack.use(duckling)
    hook = ClickHouseHook()
    for index, day in enumerate(DAYS[:3]):
        insert_events(hook, BEFORE, day, 40 + index)
    dag_id = f"duckling_events_backfill_team_{BEFORE}"
    key = f"{BEFORE}_{DAYS[0]}"

    # --local: refused in one line naming the start and how to move the day; exit 2, nothing written.
    for argv in (["run", key, "--local"], ["run", key, "--local", "--json"]):
        code, out, err = cli(capsys, *argv)
        assert code == 2 and "Running" not in out and "{" not in out, (argv, out, err)
        (line,) = [text for text in err.splitlines() if text.startswith("duckling: error:")]
        assert (f"{key} is before the start of {dag_id} ({DAYS[2]}, the registry's start_date), so --local cannot "
                "run it; nothing done.") in line, line
        assert line.endswith(f"To move it: duckling run {key} (without --local: a manual run has no logical date, and the "
                         f"scheduler runs it), or set an earlier start_date for team {BEFORE} in the registry")
    code, _, err = cli(capsys, "run", f"{BEFORE}_{DAYS[0]}..{DAYS[1]}", "--local")
    assert code == 2 and f"{BEFORE}_{DAYS[0]}..{DAYS[1]} ends before the start of {dag_id} ({DAYS[2]}" in err
    assert stack.keys(duckling.bucket) == [] and catalog_tables(stack, duckling) == 0
    assert dag_runs(dag_id) == [] and outcome_lines(caplog, key) == []

    # A range that ends on or after the start is moved whole, its days before the start too.
    span = f"{BEFORE}_{DAYS[1]}..{DAYS[2]}"
    code, out, err = cli(capsys, "run", span, "--local")
    assert code == 0, out + err
    assert row(out, span).split()[:4] == [span, "success", "registered", str(41 + 42)]
    assert lake_day_counts(duckling, "events") == {DAYS[1]: 41, DAYS[2]: 42}
    assert outcome_lines(caplog, span) == [
        f"event=run_outcome partition={span} table=events outcome=registered moved=true detail=registered"]

    # Triggered (the trigger form's way too): no logical date, so Airflow gives the run its tasks and the
    # scheduler moves the day.
    before = {r.run_id for r in dag_runs(dag_id)}
    code, out, err = cli(capsys, "run", key)
    assert (code, err) == (0, ""), out + err
    assert f"Note: {key} lies (partly) before the DAG's start ({DAYS[2]}); a run without a logical date moves it" in out
    (new,) = [r for r in dag_runs(dag_id) if r.run_id not in before]
    assert new.logical_date is None and new.conf == {"partition_key": key}
    assert new.task_ids == ["export", "register", "wait_for_late_events"]

    # A run that does carry a logical date before the start (the trigger form with a date set) gets no task
    # from Airflow: shown as such, never as a success.
    empty = team_dag(BEFORE).test(logical_date=dt.datetime.combine(DAYS[0], dt.time(1), tzinfo=dt.UTC))
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, no_color=True)
    assert report(dag_id, empty.run_id, console) == 1
    assert "skipped   nothing ran: the run's logical date is before the DAG's start" in buffer.getvalue()
    buffer.seek(0), buffer.truncate()
    assert report(dag_id, empty.run_id, console, as_json=True) == 1
    document = json.loads(buffer.getvalue())
    assert (document["state"], document["airflow_state"], document["outcome"], document["moved"]) == (
        "skipped", "success", "before_start", False)
    assert document["detail"] == f"nothing ran: the run's logical date is before the DAG's start ({DAYS[2]})"
    assert lake_day_counts(duckling, "events") == {DAYS[1]: 41, DAYS[2]: 42}


# ---------------------------------------------------------------- persons: covered by the full export


@pytest.mark.slow
def test_a_persons_day_the_full_export_covers_is_skipped_and_says_so(registry, capsys, caplog):
    stack = registry
    seed_persons(ClickHouseHook(), [PERSONS], DAYS[:2], per_day=3)
    duckling = stack.new_duckling(PERSONS, "outcome-persons", start_date=DAYS[0])
    stack.use(duckling)
    full = f"{PERSONS}_{DAYS[1]}"
    code, out, err = cli(capsys, "run", full, "--table", "persons", "--full-export", "--local")
    assert code == 0, out + err
    assert row(out, f"{PERSONS}_full").split()[1:3] == ["success", "registered"]
    keys, snapshot = stack.keys(duckling.bucket), snapshot_id(duckling)
    caplog.clear()

    key = f"{PERSONS}_{DAYS[0]}"
    code, out, err = cli(capsys, "run", key, "--table", "persons", "--local")
    assert code == 0, out + err
    cells = row(out, key)
    assert cells.split()[1] == "skipped" and "covered by the full export of persons read at " in cells
    (line,) = outcome_lines(caplog, key)
    assert line.startswith(f"event=run_outcome partition={key} table=persons outcome=covered_by_full_export "
                           "moved=false detail=covered by the full export of persons read at ")
    code, document = as_json(capsys, "run", key, "--table", "persons", "--local")
    assert code == 0
    assert (document["state"], document["airflow_state"], document["outcome"], document["moved"]) == (
        "skipped", "success", "covered_by_full_export", False)
    assert document["detail"].startswith("covered by the full export of persons read at ")
    assert (document["rows"], document["files"], document["snapshot_id"]) == (None, None, None)
    assert stack.keys(duckling.bucket) == keys and snapshot_id(duckling) == snapshot

    # A persons day before the DAG's start: refused locally, pointing at the full export.
    early = f"{PERSONS}_{DAYS[0] - dt.timedelta(days=3)}"
    code, _, err = cli(capsys, "run", early, "--table", "persons", "--local")
    assert code == 2 and f"is before the start of duckling_persons_backfill_team_{PERSONS} ({DAYS[0]}" in err
    assert f"duckling run {early} --table persons --full-export --local" in err
    assert stack.keys(duckling.bucket) == keys and snapshot_id(duckling) == snapshot


# ---------------------------------------------------------------- paused team


@pytest.mark.slow
def test_a_paused_team_s_day_run_by_hand_moves_and_says_the_team_is_paused(registry, capsys, caplog):
    stack = registry
    duckling = dataclasses.replace(stack.new_duckling(PAUSED, "outcome-paused"), paused=True)
    stack.use(duckling)
    insert_events(ClickHouseHook(), PAUSED, DAYS[1], 23)
    key = f"{PAUSED}_{DAYS[1]}"
    detail = "registered (team paused in the registry: a run by hand still moves its day)"
    code, out, err = cli(capsys, "run", key, "--local")
    assert code == 0, out + err
    assert row(out, key).split()[:3] == [key, "success", "registered"] and detail in row(out, key)
    assert outcome_lines(caplog, key) == [
        f"event=run_outcome partition={key} table=events outcome=registered moved=true detail={detail}"]
    code, document = as_json(capsys, "run", key, "--local")
    assert code == 0
    assert (document["state"], document["outcome"], document["moved"], document["detail"]) == (
        "success", "registered", True, detail)
    assert lake_day_counts(duckling, "events") == {DAYS[1]: 23}
    code, out, _ = cli(capsys, "run", key)  # triggered: the note says the pause does not stop it
    assert code == 0 and f"Note: team {PAUSED} is paused in the registry; a run by hand still moves its day." in out


# ---------------------------------------------------------------- dry run, skipped registration


def _skipped_local_run(stack, capsys, caplog, team: int, tag: str, rows: int, flag: str, outcome: str,
                       detail: str) -> tuple:
    """``duckling run TEAM_DAY --local FLAG`` for a fresh duckling with ``rows`` events: the table row, the
    log line and ``--json`` say ``skipped`` with ``outcome``; returns the duckling and the JSON document."""
    duckling = stack.new_duckling(team, tag)
    stack.use(duckling)
    insert_events(ClickHouseHook(), team, DAYS[1], rows)
    key = f"{team}_{DAYS[1]}"
    code, out, err = cli(capsys, "run", key, "--local", flag)
    assert code == 0, out + err
    cells = row(out, key)
    assert cells.split()[1] == "skipped" and detail in cells and cells.split()[-4:] == [str(rows), "1", "–", "–"]
    assert outcome_lines(caplog, key) == [
        f"event=run_outcome partition={key} table=events outcome={outcome} moved=false detail={detail}"]
    code, document = as_json(capsys, "run", key, "--local", flag)
    assert code == 0
    assert (document["state"], document["airflow_state"], document["outcome"], document["moved"]) == (
        "skipped", "success", outcome, False)
    return duckling, document


@pytest.mark.slow
def test_a_dry_run_is_skipped_and_writes_nothing(registry, capsys, caplog):
    stack = registry
    duckling, document = _skipped_local_run(stack, capsys, caplog, DRY, "outcome-dry", 17, "--dry-run", "dry_run",
                                            "dry run: nothing written (rows, files: what it would write)")
    assert (document["dry_run"], document["rows"], document["snapshot_id"]) == (True, 17, None)
    assert stack.keys(duckling.bucket) == [] and catalog_tables(stack, duckling) == 0


@pytest.mark.slow
def test_a_skipped_registration_exports_and_leaves_the_lake_alone(registry, capsys, caplog):
    stack = registry
    duckling, document = _skipped_local_run(
        stack, capsys, caplog, EXPORT_ONLY, "outcome-export-only", 19, "--skip-registration", "not_registered",
        "exported, not registered (skip_ducklake_registration): the lake is untouched")
    assert (document["rows"], document["snapshot_id"], document["replaced_rows"]) == (19, None, None)
    written = stack.keys(duckling.bucket)
    assert len([k for k in written if k.startswith("backfill/events/") and k.endswith(".parquet")]) == 2
    assert len([k for k in written if k.startswith("export_only/")]) == 2  # kept, each with its marker
    assert lake_day_counts(duckling, "events") == {}
