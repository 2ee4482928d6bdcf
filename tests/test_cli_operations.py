"""The ``duckling`` command as operators reach for it (issue 14): the all-teams status summary, never-cut
piped tables and ``--json``, a never-used embedded lake, dry-run row counts, ``discover``, and the
registry's ``export_identity`` and ``paused`` fields. Teams 200-219 are this module's own."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_provider_duckling.cli.history import DayStates, Moved, fold_registrations
from airflow_provider_duckling.cli.summary import last_closed_day, summarise, table_figures, worst_first
from airflow_provider_duckling.demo.sample_data import insert_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.registry.catalog import Duckling, load_registry, write_registry
from tests.support.stack import DAYS
from tests.test_cli import cli, line_with, row

D = dt.date
UTC = dt.UTC


@pytest.fixture
def registry(stack):
    """This test changes the shared registry: put back what was there."""
    before = dict(stack.ducklings)
    yield stack
    stack.use(*before.values())


def as_json(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, object]:
    """Run ``duckling argv… --json``: the exit code and the one JSON document stdout holds (nothing else: log
    lines, at this test process's INFO level, go to stderr)."""
    code, out, _ = cli(capsys, *argv, "--json")
    return code, json.loads(out)


# ---------------------------------------------------------------- figures (pure)


def test_lag_counts_closed_days_after_the_newest_held_day():
    closed = D(2026, 11, 27)
    kw = {"last_closed": closed, "expected_until": D(2026, 11, 28), "moved": Moved()}
    nothing = table_figures(1, "events", D(2026, 11, 20), runs=DayStates(), lake_days=None, **kw)
    assert (nothing.latest_day, nothing.lag_days, nothing.expected_days) == (None, 8, 9)  # 20 … 27 missing
    runs = DayStates(succeeded={D(2026, 11, 20), D(2026, 11, 24)}, failed={D(2026, 11, 21)}, running={D(2026, 11, 22)})
    held = table_figures(1, "persons", D(2026, 11, 20), runs=runs, lake_days={D(2026, 11, 25)}, **kw)
    assert (held.latest_day, held.lag_days, held.failed_days, held.running_days) == (D(2026, 11, 25), 2, (D(2026, 11, 21),), 1)
    assert (held.covered_days, held.registered_days) == (3, 1)
    # A day newer than the last settled one (yesterday, before the settle delay passed) is no negative lag.
    ahead = table_figures(1, "events", D(2026, 11, 20), runs=DayStates(succeeded={D(2026, 11, 28)}), lake_days=None, **kw)
    assert ahead.lag_days == 0
    # A day the registrations name counts as held even when no run or lake says so (its run was cleared).
    moved = table_figures(1, "events", D(2026, 11, 20), runs=DayStates(), lake_days=None,
                          **{**kw, "moved": Moved(rows=5, bytes=7, latest_day=D(2026, 11, 26))})
    assert (moved.lag_days, moved.rows, moved.bytes) == (1, 5, 7)
    pending = table_figures(2, "events", None, runs=DayStates(), lake_days=None, **kw)
    assert (pending.lag_days, pending.expected_days) == (None, None)

    teams = summarise([nothing, held, pending, dataclasses.replace(ahead, team_id=3)])
    assert [t.team_id for t in worst_first(teams)] == [2, 1, 3]  # pending discovery, then the largest lag
    assert (teams[0].lag_days, teams[0].failed_days, teams[0].behind, teams[2].behind) == (8, 1, True, False)


def test_the_last_closed_day_waits_for_the_settle_delay():
    settle = dt.timedelta(minutes=120)
    assert last_closed_day(dt.datetime(2026, 11, 29, 1, 59, tzinfo=UTC), settle) == D(2026, 11, 27)
    assert last_closed_day(dt.datetime(2026, 11, 29, 2, 0, tzinfo=UTC), settle) == D(2026, 11, 28)
    assert last_closed_day(dt.datetime(2026, 11, 29, 0, 0, tzinfo=UTC), dt.timedelta(0)) == D(2026, 11, 28)


def test_rows_and_bytes_moved_count_the_latest_registration_of_each_day():
    tables = {"duckling_team_5_events": (5, "events"), "duckling_team_5_persons": (5, "persons")}
    events = [
        ("duckling_team_5_events", "5_2024-03-08", {"rows": 10, "bytes": 100}, 1),
        ("duckling_team_5_events", "5_2024-03-09", {"rows": 20, "bytes": 200}, 2),
        ("duckling_team_5_events", "5_2024-03-08", {"rows": 12, "bytes": 120}, 3),  # a re-run replaces its day
        ("duckling_team_5_persons", "5_full", {"rows": 4, "bytes": 40}, 4),  # a full export names no day
        ("duckling_team_6_events", "6_2024-03-10", {"rows": 99, "bytes": 999}, 5),  # not asked for
        ("duckling_team_5_events", None, {"rows": 1000}, 6),  # no partition: not a registration of a day
    ]
    moved = fold_registrations(events, tables)
    assert moved[(5, "events")] == Moved(rows=32, bytes=320, latest_day=D(2024, 3, 9), partitions=2)
    assert moved[(5, "persons")] == Moved(rows=4, bytes=40, latest_day=None, partitions=1)
    assert (6, "events") not in moved


# ---------------------------------------------------------------- registry: piped output, --json, new fields

LONG_HOST = "catalog." + ".".join(["a" * 60] * 3) + ".internal.example.com"
SECRET_200 = "long-ext-id-Secret0200"


def _entry(team_id: int, **changes: object) -> Duckling:
    base = Duckling(team_id=team_id, bucket=f"ops-long-bucket-name-for-piping-t{team_id}", bucket_region="eu-west-1",
                    db_host=LONG_HOST, db_name=f"lake_ops_{team_id}",
                    cross_account_role_arn=f"arn:aws:iam::123456789012:role/duckling-writer-with-a-long-name-{team_id}",
                    cross_account_external_id=f"long-ext-id-Secret0{team_id}")
    return dataclasses.replace(base, **changes)


def test_piped_tables_never_cut_a_value_and_json_masks_external_ids(tmp_path, capsys):
    path = tmp_path / "ducklings.yaml"
    write_registry([_entry(200, export_identity="clickhouse"), _entry(201, paused=True)], path)
    script = Path(sys.executable).with_name("duckling")
    piped = subprocess.run([script, "catalog", "list", "--registry", path], capture_output=True, text=True,
                           timeout=120, env=os.environ)
    assert piped.returncode == 0, piped.stderr
    line = line_with(piped.stdout, "t200")
    assert len(line) > 300  # wider than any terminal: rich would have cut it at 80 (or 200) columns when piped
    for value in (_entry(200).bucket, f"lake_ops_200 on {LONG_HOST}", _entry(200).cross_account_role_arn, "****0200",
                  "clickhouse"):
        assert value in line
    assert "…" not in piped.stdout and SECRET_200 not in piped.stdout + piped.stderr
    assert line_with(piped.stdout, "t201").split()[-2:] == ["default", "paused"]

    code, listed = as_json(capsys, "catalog", "list", "--registry", path)
    assert code == 0 and [d["team_id"] for d in listed["ducklings"]] == [200, 201]
    first, second = listed["ducklings"]
    assert first["cross_account_external_id"] == "****0200" and first["db_host"] == LONG_HOST
    assert (first["export_identity"], first["paused"], second["paused"]) == ("clickhouse", False, True)
    assert "Secret0200" not in json.dumps(listed) and "Secret0201" not in json.dumps(listed)
    assert as_json(capsys, "catalog", "list", "--registry", tmp_path / "none.yaml")[1]["ducklings"] == []


def test_catalog_add_export_identity_and_pause_resume_write_only_that_field(tmp_path, capsys):
    path = tmp_path / "ducklings.yaml"
    add = ["catalog", "add", "--team-id", "202", "--bucket", "ops-t202", "--region", "us-east-1", "--db-host",
           "catalog.internal", "--db-name", "lake_202", "--role-arn", "arn:aws:iam::111122223333:role/duckling-writer",
           "--external-id", "ops-ext-id-Secret0202", "--registry", path]
    code, out, err = cli(capsys, *add, "--export-identity", "clickhouse")
    assert (code, err) == (0, "") and "ops-ext-id-Secret0202" not in out
    assert load_registry(path)[202].export_identity == "clickhouse"
    written = path.read_bytes()
    code, _, err = cli(capsys, *add[:3], "203", *add[4:], "--export-identity", "own_keys")
    assert code == 2 and "invalid choice: 'own_keys'" in err and path.read_bytes() == written
    assert yaml.safe_load(written)["ducklings"][0]["export_identity"] == "clickhouse"

    code, out, err = cli(capsys, "catalog", "pause", "202", "--registry", path)
    assert (code, err) == (0, "") and "Paused team 202" in out and "duckling catalog resume 202" in out
    paused = load_registry(path)[202]
    assert paused.paused is True and dataclasses.replace(paused, paused=False) == load_registry_from(written)[202]
    paused_bytes = path.read_bytes()
    code, out, _ = cli(capsys, "catalog", "pause", "202", "--registry", path)
    assert code == 0 and "already paused" in out and path.read_bytes() == paused_bytes
    for argv, message in ((["pause", "999"], "team 999 has no duckling in ducklings.yaml"),
                          (["resume", "abc"], "invalid team id 'abc'"), (["pause"], "the following arguments are required")):
        code, _, err = cli(capsys, "catalog", *argv, "--registry", path)
        assert code == 2 and message in err, (argv, err)
        assert path.read_bytes() == paused_bytes
    code, out, _ = cli(capsys, "catalog", "resume", "202", "--registry", path)
    assert code == 0 and "Resumed team 202" in out
    assert "paused" not in yaml.safe_load(path.read_text())["ducklings"][0]
    assert load_registry(path) == load_registry_from(written)


def load_registry_from(content: bytes) -> dict[int, Duckling]:
    from airflow_provider_duckling.registry.catalog import parse_registry_text

    return parse_registry_text(content.decode(), Path("ducklings.yaml"))


# ---------------------------------------------------------------- embedded lake never used


def test_validate_and_status_accept_a_never_used_embedded_lake(registry, tmp_path, monkeypatch, capsys):
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook

    root = tmp_path / "lakes"
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_OPS_EMBEDDED",
                       json.dumps({"conn_type": "ducklake", "extra": {"local_root": str(root)}}))
    duckling = dataclasses.replace(registry.new_duckling(203, "ops-embedded"), catalog_conn_id="ducklake_ops_embedded")
    registry.use(duckling)
    code, out, err = cli(capsys, "catalog", "validate", "203")
    assert (code, err) == (0, ""), out
    assert row(out, "203") == ["203", "ok", "–", "–", "ok", "(new)"] and "All 1 duckling(s) reachable." in out
    code, report = as_json(capsys, "catalog", "validate", "203")
    (team,) = report["teams"]
    assert code == 0 and report["problems"] == [] and report["clickhouse"]["ok"] is True
    assert {c["piece"]: c["ok"] for c in team["checks"]} == {"connection": True, "role": None, "bucket": None, "catalog": True}
    assert "not initialised yet" in team["checks"][-1]["detail"]
    # Status reads the never-used lake as empty instead of failing on it.
    code, out, err = cli(capsys, "status", "203")
    assert (code, err) == (0, "") and row(out, "203", "events")[4] == "0"
    assert not root.exists()  # looking wrote nothing: no catalog file, no data folder

    with DuckLakeHook("ducklake_ops_embedded").attach(duckling):
        pass  # the first use creates the catalog
    code, out, _ = cli(capsys, "catalog", "validate", "203")
    assert code == 0 and row(out, "203") == ["203", "ok", "–", "–", "ok"]
    assert json.loads(cli(capsys, "catalog", "validate", "203", "--json")[1])["teams"][0]["checks"][-1]["detail"] \
        .endswith("snapshot(s)")
    for text in (out, err):
        assert duckling.cross_account_external_id not in text


# ---------------------------------------------------------------- dry run


@pytest.mark.slow
def test_a_dry_run_reports_the_rows_it_would_write(registry, capsys):
    duckling = registry.new_duckling(204, "ops-dry")
    registry.use(duckling)
    insert_events(ClickHouseHook(), 204, DAYS[1], 321)
    code, out, err = cli(capsys, "run", f"204_{DAYS[1]}", "--local", "--dry-run")
    assert code == 0, out + err
    cells = row(out, f"204_{DAYS[1]}")
    assert cells[:4] == [f"204_{DAYS[1]}", "skipped", "dry", "run:"] and "321" in cells  # nothing moved
    code, report = as_json(capsys, "run", f"204_{DAYS[1]}", "--local", "--dry-run")
    assert code == 0 and (report["dry_run"], report["rows"], report["state"]) == (True, 321, "skipped")
    assert (report["airflow_state"], report["outcome"], report["moved"]) == ("success", "dry_run", False)
    assert report["partition"] == f"204_{DAYS[1]}" and report["replaced_rows"] is None and report["bytes"] is None
    assert registry.keys(duckling.bucket) == []  # still nothing written


# ---------------------------------------------------------------- status: all teams, worst lag first


def team_order(out: str) -> list[str]:
    """The team ids of the summary's lines, in printed order."""
    return [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["205"], ["206"], ["207"], ["208"], ["209"])]


@pytest.mark.slow
def test_status_summary_puts_the_worst_lag_first_under_totals(registry, capsys):
    from airflow_provider_duckling.registry import settings

    closed = last_closed_day(dt.datetime.now(UTC), settings.settle_delay())
    hook = ClickHouseHook()
    moving = registry.new_duckling(205, "ops-moving")  # DAYS[0], DAYS[1] registered, DAYS[2] failed
    idle = registry.new_duckling(206, "ops-idle")  # nothing yet: lags by every day since DAYS[0]
    current = registry.new_duckling(207, "ops-current", start_date=closed)  # up to date
    paused = dataclasses.replace(registry.new_duckling(208, "ops-paused", start_date=closed - dt.timedelta(days=2)),
                                 paused=True)
    pending = registry.new_duckling(209, "ops-pending", start_date=None)
    registry.use(moving, idle, current, paused, pending)
    counts = {DAYS[0]: 250, DAYS[1]: 260}
    for day, n in counts.items():
        insert_events(hook, 205, day, n)
        assert cli(capsys, "run", f"205_{day}", "--local")[0] == 0
    assert cli(capsys, "run", f"205_{DAYS[2]}", "--local", "--clickhouse-settings", '{"no_such_setting_at_all": 1}')[0] == 1
    for table in ("events", "persons"):
        assert cli(capsys, "run", f"207_{closed}", "--local", "--table", table)[0] == 0

    code, out, err = cli(capsys, "status")
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith("5 team(s): 3 behind, 1 with failed days, 0 running, 1 paused, "
                                          "1 pending discovery; 510 rows, ")
    # Pending discovery first, then the largest lag (205 and 206 tie: the failed day ranks 205 first).
    assert team_order(out) == ["209", "205", "206", "208", "207"]
    lag_idle = (closed - DAYS[0]).days + 1
    assert row(out, "206")[:6] == ["206", str(lag_idle), "none", "none", "0", "0"]
    assert row(out, "205")[:7] == ["205", str(lag_idle), DAYS[1].isoformat(), "none", "1", "0", "510"]
    assert row(out, "207")[:5] == ["207", "0", closed.isoformat(), closed.isoformat(), "0"]
    assert row(out, "208")[-1] == "paused" and row(out, "208")[1] == "3"
    assert row(out, "209")[1:4] == ["–", "pending", "pending"]

    code, out, _ = cli(capsys, "status", "--behind", "--limit", "2")
    assert code == 0 and team_order(out) == ["209", "205"]
    assert "… and 2 more team(s) (--limit)" in out  # 207 is not behind, so 4 qualify

    code, summary = as_json(capsys, "status")
    assert code == 0 and summary["lake_read"] is False and summary["last_closed_day"] == closed.isoformat()
    assert summary["totals"] == {"teams": 5, "behind": 3, "failing": 1, "running": 0, "paused": 1,
                                 "pending_discovery": 1, "rows": 510, "bytes": summary["totals"]["bytes"]}
    assert [t["team_id"] for t in summary["teams"]] == [209, 205, 206, 208, 207]
    events = summary["teams"][1]["tables"]["events"]
    assert (events["latest_day"], events["failed_days"], events["rows"]) == (DAYS[1].isoformat(), [DAYS[2].isoformat()], 510)
    # Bytes moved are the registered files' sizes in the bucket.
    s3 = registry.s3()
    sizes = sum(s3.head_object(Bucket=moving.bucket, Key=k)["ContentLength"] for k in registry.keys(moving.bucket))
    assert events["bytes"] == sizes > 0

    # One team in detail: the lake is read, and every figure per table.
    code, out, _ = cli(capsys, "status", "205")
    cells = row(out, "205", "events")
    assert code == 0 and cells[3:11] == [str((dt.datetime.now(UTC).date() - DAYS[0]).days), "2", "1", "0",
                                         DAYS[1].isoformat(), str((closed - DAYS[1]).days), "510", cells[10]]
    assert f"team 205 events: failed days {DAYS[2]}" in out
    code, detail = as_json(capsys, "status", "205", "208")
    assert code == 0 and detail["lake_read"] is True and [t["team_id"] for t in detail["teams"]] == [205, 208]
    assert detail["teams"][0]["tables"]["events"]["registered_days"] == 2 and detail["teams"][1]["paused"] is True

    code, verified = as_json(capsys, "verify", "205", "--from", DAYS[0], "--to", DAYS[1])
    assert code == 0 and (verified["match"], verified["days"], verified["differing_days"]) == (True, 2, [])
    for text in (out, json.dumps(summary), json.dumps(detail)):
        assert moving.cross_account_external_id not in text


def test_the_all_teams_summary_reads_the_metadata_db_once_per_kind(airflow_db, tmp_path, capsys):
    """3,000 registered teams (a registry file only: no data, no lake): one query over all their runs, one
    over their registrations, no lake attached, one line per team."""
    from airflow.settings import engine
    from sqlalchemy import event

    teams = range(200_000, 203_000)  # registry-only ids: nothing is written for them anywhere
    write_registry([Duckling(team_id=t, bucket=f"ops-many-t{t}", bucket_region="us-east-1", db_host="catalog.internal",
                             db_name=f"lake_many_{t}", cross_account_role_arn="arn:aws:iam::123456789012:role/x-many",
                             cross_account_external_id=f"ops-many-Secret{t}", start_date=D(2024, 1, 1))
                    for t in teams], tmp_path / "ducklings.yaml")
    statements: list[str] = []

    def seen(conn, cursor, statement, *_):  # noqa: ANN001
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        code, summary = as_json(capsys, "status", "--registry", tmp_path / "ducklings.yaml")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert code == 0 and summary["totals"]["teams"] == 3000 and len(summary["teams"]) == 3000
    assert summary["lake_read"] is False
    assert sum("FROM dag_run" in s for s in statements) == 1
    assert sum("FROM asset_event" in s for s in statements) == 1
    code, out, _ = cli(capsys, "status", "--registry", tmp_path / "ducklings.yaml")
    firsts = [line.split()[0] for line in out.splitlines() if line.split()]
    assert code == 0 and sorted(int(t) for t in firsts if t.isdigit() and int(t) in teams) == list(teams)


# ---------------------------------------------------------------- discover


@pytest.mark.slow
@pytest.mark.quick
def test_discover_finds_and_remembers_start_dates_without_a_scheduler(registry, capsys):
    from airflow_provider_duckling.registry.state import load_start_dates

    hook = ClickHouseHook()
    insert_events(hook, 210, DAYS[3], 20)
    insert_events(hook, 210, DAYS[1], 10)
    fresh = registry.new_duckling(210, "ops-discover", start_date=None)
    empty = registry.new_duckling(211, "ops-nodata", start_date=None)
    fixed = registry.new_duckling(212, "ops-fixed")  # start_date in the registry: never asked
    registry.use(fresh, empty, fixed)
    yesterday = dt.datetime.now(UTC).date() - dt.timedelta(days=1)

    code, out, err = cli(capsys, "discover")
    assert (code, err) == (0, "")
    assert row(out, "210", "events")[2:] == [DAYS[1].isoformat(), "discovered", "now"]
    assert row(out, "210", "persons")[2:] == [yesterday.isoformat(), "discovered", "now"]
    assert row(out, "211", "events")[2:5] == ["–", "no", "data"]
    assert row(out, "212", "events")[2:4] == [DAYS[0].isoformat(), "registry"]
    remembered = load_start_dates()
    assert remembered["events"][210] == DAYS[1] and 211 not in remembered.get("events", {})
    assert 212 not in remembered.get("events", {}) and 212 not in remembered.get("persons", {})

    code, report = as_json(capsys, "discover", "210")
    assert code == 0 and [(t["table"], t["start_date"]) for t in report["teams"]] == [
        ("events", DAYS[1].isoformat()), ("persons", yesterday.isoformat())]
    assert report["teams"][0]["source"].startswith("known")
    # status now shows the discovered start; an unknown team exits 2 and writes nothing.
    assert row(cli(capsys, "status", "210", "--no-lake")[1], "210", "events")[2] == DAYS[1].isoformat()
    code, _, err = cli(capsys, "discover", "999")
    assert code == 2 and "team 999 has no duckling" in err
