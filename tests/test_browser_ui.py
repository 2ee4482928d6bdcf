"""The real Airflow UI in a browser, used as a person would (issue 15, point 1).

A real api-server, scheduler (LocalExecutor) and dag-processor run on loopback with the project's DAGs
and a password login (simple auth manager); Chromium from the OS packages is driven by Playwright.
Team 300's lake is on S3 (moto) with a PostgreSQL catalog and no start date (only hand-triggered runs);
team 301's lake is embedded (local files, DuckDB catalog) and catches up six days once switched on.
Every step saves a screenshot into ``test-artifacts/browser-ui/`` (the best few are in docs/images/).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from typing import Any
from urllib.parse import quote, unquote

import pytest

from airflow_provider_duckling.demo.report import lake_day_counts
from airflow_provider_duckling.demo.sample_data import clickhouse_day_counts, insert_events
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.links.exported_objects import xcom_page
from airflow_provider_duckling.registry.catalog import Duckling, write_registry
from airflow_provider_duckling.scheduling.dag_factory import backfill_params, dag_id_for
from tests.conftest import SESSION_DIR
from tests.support.airflow_stack import make_airflow_stack, new_metadata_db
from tests.support.browser import api_get, artifacts_dir, launch

S3_TEAM, LOCAL_TEAM = 300, 301  # team ids no other test uses (ClickHouse is shared)
S3_DAYS = [dt.date(2024, 5, 1) + dt.timedelta(days=n) for n in range(3)]
S3_ROWS, LOCAL_ROWS = 40, 25
LOCAL_DAY_COUNT = 6  # more than the DAG's max_active_runs (4): switched off mid catch-up, days are left
#: How long a switched-off DAG is watched doing nothing: 15 of the scheduler's 1-second loops.
OFF_WATCH_SECONDS = 15
DB = "airflow_browser_ui"
USER, PASSWORD = "admin", "ui-admin-pw"
S3_DAG, LOCAL_DAG = dag_id_for("events", S3_TEAM), dag_id_for("events", LOCAL_TEAM)


def _embedded_duckling(start: dt.date) -> Duckling:
    return Duckling(
        team_id=LOCAL_TEAM, bucket="ui-embedded-t301", bucket_region="us-east-1", db_host="127.0.0.1",
        db_name="lake_ui_embedded_t301", cross_account_role_arn="arn:aws:iam::123456789012:role/duckling-ui-embedded",
        cross_account_external_id="ext-id-ui-embedded", catalog_conn_id="ducklake_local", start_date=start,
    )


@pytest.fixture
def ui(stack: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Airflow deployment: registry, metadata DB, password login, components started; stopped afterwards."""
    root = SESSION_DIR / "browser-ui"
    root.mkdir(parents=True, exist_ok=True)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    ch = ClickHouseHook()
    insert_events(ch, S3_TEAM, S3_DAYS[0], S3_ROWS, days=len(S3_DAYS))
    first_local_day = yesterday - dt.timedelta(days=LOCAL_DAY_COUNT - 1)
    insert_events(ch, LOCAL_TEAM, first_local_day, LOCAL_ROWS, days=LOCAL_DAY_COUNT)
    s3_lake = stack.new_duckling(S3_TEAM, "ui", start_date=None)
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_LOCAL",
                       json.dumps({"conn_type": "ducklake", "extra": {"local_root": str(root / "lakes")}}))
    local_lake = _embedded_duckling(first_local_day)
    registry = root / "ducklings.yaml"
    write_registry([s3_lake, local_lake], registry)
    # Team 301 as first seen on its first day: each of its six days is a run of its own (no history batch), so
    # that switching it off mid catch-up leaves runs to do.
    from airflow_provider_duckling.registry.state import DiscoveryState, save_discovery_state

    save_discovery_state(DiscoveryState(first_seen={LOCAL_TEAM: dt.datetime.combine(first_local_day, dt.time(),
                                                                                    tzinfo=dt.UTC)}),
                         root / "state.json")
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    airflow = make_airflow_stack(root / "home", dict(os.environ), new_metadata_db(stack.postgres, DB), {
        "AIRFLOW__DUCKLING__REGISTRY_PATH": str(registry),
        "AIRFLOW__DUCKLING__STATE_PATH": str(root / "state.json"),
        "AIRFLOW__DUCKLING__SETTLE_MINUTES": "0",
        "AIRFLOW__DUCKLING__TOPUP_DAYS": "0",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    })
    # Everything but team 300's events DAG starts paused: the housekeeping and persons DAGs would take the
    # two cores, and team 301's catch-up is what the person switches on.
    for args in (("dags", "reserialize"), ("dags", "pause", "--treat-dag-id-as-regex", "-y", f"^(?!{S3_DAG}$).*")):
        result = airflow.airflow(*args)
        assert result.returncode == 0, result.stderr[-2000:]
    airflow.start(api_first=True)
    airflow.lakes = {S3_TEAM: s3_lake, LOCAL_TEAM: local_lake}
    airflow.clickhouse = ch
    airflow.s3_keys = lambda: stack.keys(s3_lake.bucket)
    try:
        yield airflow
    finally:
        airflow.stop()


def _runs(page: Any, dag_id: str) -> dict[str, str]:
    """run_id → state, as the UI's own API session sees them."""
    answer = api_get(page, f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
    assert answer["status"] == 200, answer
    return {r["dag_run_id"]: r["state"] for r in answer["body"]["dag_runs"]}


def _wait_for_runs(page: Any, dag_id: str, count: int, ui: Any, timeout: float = 240) -> dict[str, str]:
    """Wait until ``dag_id`` has ``count`` finished runs (a deadline, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(page, dag_id)
        if len(runs) >= count and all(s in ("success", "failed") for s in runs.values()):
            return runs
        time.sleep(2)
    raise AssertionError(f"{dag_id}: {_runs(page, dag_id)}\nscheduler:\n{ui.log_tail('scheduler')}")


def _wait_for_dags(page: Any, dag_ids: list[str], timeout: float = 120) -> None:
    """Wait until the api-server lists these DAGs (the dag-processor's first pass may still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = {d["dag_id"] for d in api_get(page, "/api/v2/dags?limit=100")["body"].get("dags", [])}
        if set(dag_ids) <= listed:
            return
        time.sleep(1)
    raise AssertionError(f"DAGs not listed after {timeout:.0f} s: {sorted(set(dag_ids) - listed)}")


def _wait_until(probe: Any, what: str, ui: Any, timeout: float = 180) -> Any:
    """``probe()``'s first truthy answer (a deadline, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(0.5)
    raise AssertionError(f"no {what} after {timeout:.0f} s\nscheduler:\n{ui.log_tail('scheduler')}")


def _settled_tasks(page: Any, dag_id: str) -> dict[tuple[str, str], str | None] | None:
    """Every task instance of ``dag_id`` → state, once none is queued or running (else None): what a
    switched-off DAG's runs hold when the tasks already started have ended."""
    answer = api_get(page, f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances?limit=100")
    assert answer["status"] == 200, answer
    states = {(t["dag_run_id"], t["task_id"]): t["state"] for t in answer["body"]["task_instances"]}
    return None if not states or {"queued", "running"} & set(states.values()) else states


def _runs_page_shows(page: Any, dag_id: str, count: int, state: str | None = None) -> None:
    """Open the DAG's Runs tab and wait until it lists ``count`` runs (all in ``state`` when given)."""
    from playwright.sync_api import expect

    page.goto(f"dags/{dag_id}/runs")
    expect(page.get_by_text(re.compile(rf"^{count} Dag Runs?$"))).to_be_visible()
    if state:
        expect(page.get_by_role("row").filter(has_text=state)).to_have_count(count)


def _task_state(page: Any, dag_id: str, run_id: str, task_id: str) -> tuple[str | None, int]:
    answer = api_get(page, f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}")
    return answer["body"].get("state"), int(answer["body"].get("try_number") or 0)


def _open_trigger_form(page: Any, dag_id: str) -> Any:
    page.goto(f"dags/{dag_id}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("#element_partition_key").wait_for()
    return dialog


def _trigger(page: Any, dialog: Any) -> str:
    """Submit the trigger form; the UI then opens the new run: its id."""
    dialog.get_by_role("button", name="Trigger").last.click()
    page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    return unquote(page.url.rsplit("/runs/", 1)[1])


def _run_page(page: Any, dag_id: str, run_id: str, tail: str = "") -> None:
    page.goto(f"dags/{dag_id}/runs/{quote(run_id, safe='')}{tail}")


@pytest.mark.slow
def test_a_person_runs_a_partition_through_the_airflow_ui(ui: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    s3_lake, local_lake, ch = ui.lakes[S3_TEAM], ui.lakes[LOCAL_TEAM], ui.clickhouse
    with sync_playwright() as playwright:
        browser, page, shot = launch(playwright, artifacts_dir("browser-ui"), f"http://127.0.0.1:{ui.port}/")
        try:
            # 1. Log in with the password; the DAG list shows every team's DAGs with their tags.
            page.goto("")
            page.get_by_label("Username").fill(USER)
            page.get_by_label("Password").fill(PASSWORD)
            shot("login")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/login" not in url)
            _wait_for_dags(page, [dag_id_for(t, team) for t in ("events", "persons") for team in (S3_TEAM, LOCAL_TEAM)])
            page.goto("dags")
            for team in (S3_TEAM, LOCAL_TEAM):
                for table in ("events", "persons"):
                    card = page.get_by_role("link", name=dag_id_for(table, team), exact=True)
                    expect(card).to_be_visible()
                    expect(page.get_by_role("link", name=f"team:{team}", exact=True).first).to_be_visible()
            expect(page.get_by_role("link", name="housekeeping", exact=True).first).to_be_visible()
            shot("dag list with tags")

            # 2. The trigger form shows every option with its title and description.
            dialog = _open_trigger_form(page, S3_DAG)
            params = backfill_params("events")
            titles = [param.schema["title"] for param in params.values()]
            assert {"ClickHouse settings", "Skip DuckLake registration"} <= set(titles), titles
            for title, param in zip(titles, params.values(), strict=True):
                # Case-sensitive: the label is the title and a required-field asterisk.
                expect(dialog.get_by_text(re.compile(rf"^{re.escape(title)}\s*\*?$"))).to_be_visible()
                expect(dialog.get_by_text(param.description, exact=True)).to_be_visible()
            shot("trigger form", height=2000)

            # 3. A malformed partition key: refused when submitted, in one line, and nothing runs or is written.
            dialog.locator("#element_partition_key").fill(f"{S3_TEAM}-{S3_DAYS[0]}")
            dialog.get_by_role("button", name="Trigger").last.click()
            error = dialog.get_by_text(f"Partition '{S3_TEAM}-{S3_DAYS[0]}' is not {{team_id}}_{{YYYY-MM-DD}} "
                                       "(e.g. 12345_2024-01-15); nothing was triggered", exact=True)
            expect(error).to_be_visible()
            expect(dialog.get_by_text("Failed validating")).to_have_count(0)  # not jsonschema's report
            error.scroll_into_view_if_needed()
            shot("bad partition key refused")
            assert _runs(page, S3_DAG) == {} and ui.s3_keys() == []
            page.keyboard.press("Escape")

            # 4. A dry run of one partition: succeeds, registers nothing, writes nothing.
            dialog = _open_trigger_form(page, S3_DAG)
            dialog.locator("#element_partition_key").fill(f"{S3_TEAM}_{S3_DAYS[0]}")
            dialog.locator('[id="switch:element_dry_run"]').click()
            expect(dialog.locator("input[name=element_dry_run]")).to_be_checked()
            shot("dry run options")
            dry_run = _trigger(page, dialog)
            assert _wait_for_runs(page, S3_DAG, 1, ui)[dry_run] == "success"
            assert _task_state(page, S3_DAG, dry_run, "register")[0] == "skipped"
            assert ui.s3_keys() == [] and lake_day_counts(s3_lake, "events") == {}

            # 5. The real run of another partition: succeeds in the grid; the lake holds exactly that day.
            dialog = _open_trigger_form(page, S3_DAG)
            dialog.locator("#element_partition_key").fill(f"{S3_TEAM}_{S3_DAYS[1]}")
            real_run = _trigger(page, dialog)
            assert _wait_for_runs(page, S3_DAG, 2, ui)[real_run] == "success"
            assert lake_day_counts(s3_lake, "events") == {S3_DAYS[1]: S3_ROWS}
            assert clickhouse_day_counts(ch, S3_TEAM)[S3_DAYS[1]] == S3_ROWS
            _run_page(page, S3_DAG, real_run)
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            expect(page.get_by_text("DuckLakeRegisterOperator")).to_be_visible()
            shot("run succeeded in the grid")

            # 6. The export task's log: one readable line per step, with its figures.
            _run_page(page, S3_DAG, real_run, "/tasks/export")
            key = f"{S3_TEAM}_{S3_DAYS[1]}"
            expect(page.get_by_text(re.compile(rf"event=export_started partition={key}"))).to_be_visible()
            expect(page.get_by_text(re.compile(rf"event=export_finished .*rows={S3_ROWS}"))).to_be_visible()
            shot("export task log")

            # 7. The "Exported objects" link of the S3 lake: the partition's folder in the bucket's console.
            _run_page(page, S3_DAG, real_run, "/tasks/register/details")
            link = page.get_by_role("link", name="Exported objects")
            expect(link).to_be_visible()
            href = link.get_attribute("href") or ""
            assert href.startswith(f"https://s3.console.aws.amazon.com/s3/buckets/{s3_lake.bucket}?"), href
            assert f"team_id={S3_TEAM}/year=2024/month=05/day=02/" in href, href
            shot("exported objects link")

            # 8. The asset event of the registered partition, with its partition key.
            page.goto("assets")
            page.get_by_role("link", name=f"duckling_team_{S3_TEAM}_events", exact=True).click()
            expect(page.get_by_text(f"Partition Key: {key}")).to_be_visible()
            shot("asset event with partition key")

            # 9. Clear the finished register task: it runs again and the lake stays exact.
            _run_page(page, S3_DAG, real_run, "/tasks/register")
            page.get_by_role("button", name="Press shift+c to clear").click()
            page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
            deadline = time.monotonic() + 180
            while _task_state(page, S3_DAG, real_run, "register") != ("success", 2) and time.monotonic() < deadline:
                time.sleep(2)
            assert _task_state(page, S3_DAG, real_run, "register") == ("success", 2)
            assert lake_day_counts(s3_lake, "events") == {S3_DAYS[1]: S3_ROWS}
            page.reload()
            expect(page.get_by_text(f"event=already_registered partition={key} table=events rows={S3_ROWS}")).to_be_visible()
            shot("cleared task ran again")

            # 10. Team 301's DAG has been off since the start with six days due, and nothing ran. Switched on,
            #     catch-up starts; switched off at once, nothing new is scheduled (no run created, no task
            #     started) while the scheduler keeps looping; switched on again, the rest of catch-up runs and
            #     the lake holds every day exactly once.
            assert _runs(page, LOCAL_DAG) == {}
            page.goto(f"dags/{LOCAL_DAG}")
            toggle = page.get_by_test_id("toggle-pause")
            toggle.click()
            _wait_until(lambda: _runs(page, LOCAL_DAG), "a catch-up run", ui)
            toggle.click()
            expect(page.get_by_test_id("toggle-pause")).not_to_be_checked()
            assert api_get(page, f"/api/v2/dags/{LOCAL_DAG}")["body"]["is_paused"] is True
            when_off = _wait_until(lambda: _settled_tasks(page, LOCAL_DAG), "the started tasks to end", ui)
            time.sleep(OFF_WATCH_SECONDS)  # the window watched: the scheduler loops once a second
            assert _settled_tasks(page, LOCAL_DAG) == when_off
            off_runs = _runs(page, LOCAL_DAG)
            assert 1 <= len(off_runs) < LOCAL_DAY_COUNT and "success" not in off_runs.values(), off_runs
            _runs_page_shows(page, LOCAL_DAG, len(off_runs))
            shot("switched off mid catch-up")
            page.get_by_test_id("toggle-pause").click()
            runs = _wait_for_runs(page, LOCAL_DAG, LOCAL_DAY_COUNT, ui)
            assert set(runs.values()) == {"success"} and set(off_runs) <= set(runs), runs
            assert lake_day_counts(local_lake, "events", "ducklake_local") == clickhouse_day_counts(ch, LOCAL_TEAM)
            assert len(clickhouse_day_counts(ch, LOCAL_TEAM)) == LOCAL_DAY_COUNT
            _runs_page_shows(page, LOCAL_DAG, LOCAL_DAY_COUNT, "Success")
            shot("switched on and caught up")
            page.get_by_test_id("toggle-pause").click()
            expect(page.get_by_test_id("toggle-pause")).not_to_be_checked()
            assert api_get(page, f"/api/v2/dags/{LOCAL_DAG}")["body"]["is_paused"] is True

            # 11. The embedded lake's "Exported objects" link opens the export's XCom in Airflow itself,
            #     where the partition's files are listed (a file:// link would not show at all).
            last_run = max(runs)
            _run_page(page, LOCAL_DAG, last_run, "/tasks/register/details")
            link = page.get_by_role("link", name="Exported objects")
            expect(link).to_be_visible()
            assert link.get_attribute("href") == xcom_page(LOCAL_DAG, last_run, "export")
            shot("embedded lake link")
            link.click()
            page.wait_for_url(re.compile(r"/tasks/export/xcom$"))
            expect(page.get_by_text("return_value")).to_be_visible()
            shot("embedded lake exported files")
            # What that XCom holds, read through the UI's own session: the partition's files on disk.
            entry = api_get(page, f"/api/v2/dags/{LOCAL_DAG}/dagRuns/{quote(last_run, safe='')}/taskInstances/"
                                  "export/xcomEntries/return_value?deserialize=true")
            assert entry["status"] == 200, entry
            value = entry["body"]["value"]
            value = json.loads(value) if isinstance(value, str) else value
            folder = f"{local_lake.bucket}/backfill/events/team_id={LOCAL_TEAM}/"
            assert value["files"] and all(folder in path and path.endswith(".parquet") for path in value["files"]), value
        finally:
            browser.close()


def test_a_refused_option_becomes_one_line_only_for_duckling_triggers() -> None:
    """The middleware's rewrite, on the exact text Airflow 3.3 answers (seen in the browser test above)."""
    from airflow_provider_duckling.plugins.trigger_errors import TRIGGER_PATH, one_line

    report = ("Invalid input for param partition_key: '300-2024-05-01' does not match "
              "'^[0-9]+_[0-9]{4}-[0-9]{2}-[0-9]{2}$'\n\nFailed validating 'pattern' in schema:\n    {'type': "
              "['null', 'string'],\n     'title': 'Partition'}\n\nOn instance:\n    '300-2024-05-01'")
    assert one_line(report) == ("Partition '300-2024-05-01' is not {team_id}_{YYYY-MM-DD} (e.g. 12345_2024-01-15); "
                                "nothing was triggered")
    assert one_line("Invalid input for param dry_run: 3 is not of type 'boolean'\n\nFailed validating 'type'") == (
        "dry_run: 3 is not of type 'boolean'; nothing was triggered")
    long_key = "x" * 5000
    assert len(one_line(f"Invalid input for param partition_key: ...\n\nOn instance:\n    '{long_key}'")) < 140
    assert one_line("DAG with dag_id: 'x' not found") is None
    assert TRIGGER_PATH.search("/api/v2/dags/duckling_events_backfill_team_1/dagRuns")
    assert not TRIGGER_PATH.search("/api/v2/dags/someone_elses_dag/dagRuns")
    assert not TRIGGER_PATH.search("/api/v2/dags/duckling_events_backfill_team_1/dagRuns/run_1/clear")
