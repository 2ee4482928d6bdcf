"""Session credentials that expire during a long run: the retry (a new attempt assumes the duckling's role
again) converges on exactly ClickHouse's rows, nothing lost or doubled, and the failure is one clear line.

moto never expires an STS session, so S3 traffic goes through :class:`ExpiringS3Proxy`, which answers
AWS's ``400 ExpiredToken`` to every request carrying a session token it has expired. STS stays direct: the
retry really gets a new token from moto, which the proxy has never seen and lets through.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from airflow_provider_duckling.common import redaction
from airflow_provider_duckling.demo.sample_data import clickhouse_scope_rows, insert_events
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.lake import count_rows
from tests.support.expiring_s3_proxy import ExpiringS3Proxy, S3Request
from tests.support.runs import logged_text, run
from tests.support.stack import BASE_AWS_KEY_ID, BASE_AWS_SECRET, CATALOG_PASSWORD, CLICKHOUSE_PASSWORD, DAYS

TEAM = 51  # no other test has rows for it
DAY = DAYS[1]
ROWS = 150_000  # about 6.6 MB of Parquet
EXPIRE_AFTER = 1_000_000  # bytes into the export
# ClickHouse's defaults upload anything under 32 MiB in one PUT; 5 MiB parts (S3's minimum) make this
# export a two-part multipart upload, as a long run's export is.
MULTIPART = {"s3_max_single_part_upload_size": 5 * 2**20, "s3_min_upload_part_size": 5 * 2**20}
PART = ("partNumber", "uploadId")


@pytest.fixture(scope="module")
def big_day(stack):
    insert_events(ClickHouseHook(), TEAM, DAY, ROWS)
    return DAY


@pytest.fixture
def proxy(stack, monkeypatch):
    """The ducklake connection's S3 endpoint (both engines' S3 traffic) routed through the proxy."""
    proxy = ExpiringS3Proxy(stack.moto.port)
    conn = json.loads(os.environ["AIRFLOW_CONN_DUCKLAKE_DEFAULT"])
    conn["extra"]["s3_endpoint_url"] = proxy.url
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_DEFAULT", json.dumps(conn))
    yield proxy
    proxy.close()


def _duckdb(request: S3Request) -> bool:
    return request.agent.startswith("duckdb/")


def _clickhouse(request: S3Request) -> bool:
    return request.agent.startswith("ClickHouse")


def _attempt(request: S3Request, try_number: int) -> bool:
    return request.path.endswith(f"-try{try_number}.parquet")


def _names_of(requests: list[S3Request], try_number: int) -> set[str]:
    """The objects an attempt's requests addressed."""
    return {r.path.rsplit("/", 1)[-1] for r in requests if _attempt(r, try_number)}


def _tries(dagrun) -> dict[str, int]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: ti.try_number for ti in dagrun.get_task_instances(session=session)}


def _failures(caplog) -> list[str]:
    """The task_failed lines (one log record each; the task log prints each record once more)."""
    return [r.getMessage() for r in caplog.records if "event=task_failed" in r.getMessage()]


def _day_prefix() -> str:
    return Partition(TEAM, DAY).prefix("events")


def _registered(duckling) -> dict[str, bool]:
    """Every file of the day the catalog ever registered (object name → still live)."""
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        rows = con.execute(
            "SELECT path, end_snapshot IS NULL FROM __ducklake_metadata_lake.ducklake_data_file"
        ).fetchall()
    return {path.rsplit("/", 1)[-1]: live for path, live in rows if _day_prefix() in path}


def _lake_rows(duckling) -> int:
    with DuckLakeHook().attach(duckling, read_only=True) as con:
        return count_rows(con, EVENTS, Partition(TEAM, DAY))


def _names(stack, duckling) -> list[str]:
    return [key.rsplit("/", 1)[-1] for key in stack.keys(duckling.bucket, _day_prefix())]


def _assert_no_secrets(text: str, proxy: ExpiringS3Proxy) -> None:
    """Every session token the engines used was registered as a secret, and no secret reached the logs
    (the ExpiredToken answers echo the token, as AWS's do)."""
    held = {s for s in redaction._secrets if len(s) >= 8}
    assert sum(proxy.saw_token(s) for s in held) == proxy.tokens_seen >= 2
    leaks = [s[:6] + "…" for s in held | {CATALOG_PASSWORD, CLICKHOUSE_PASSWORD, BASE_AWS_KEY_ID, BASE_AWS_SECRET}
             if s in text]
    assert not leaks, f"secrets in the logs: {leaks}"


@pytest.mark.slow
@pytest.mark.parametrize("upload", ["multipart", "single-put"])
def test_token_expiring_mid_export_is_retried_with_a_fresh_session(stack, big_day, proxy, caplog, capfd, upload):
    """The export's session expires once 1 MB of it went up. Multipart: the part in flight (admitted before)
    lands, the other part and the abort get ExpiredToken, and ClickHouse fails the statement (it does not
    retry ExpiredToken). Single PUT: the PUT lands, the read-back of its footer gets 400 (an answer to HEAD
    has no body, so no code). Either way: one retryable line, the retry writes a new object with a new
    session, and only that object is registered."""
    duckling = stack.new_duckling(TEAM, f"expiry-{upload}")
    expected = clickhouse_scope_rows(ClickHouseHook(), "events", TEAM, big_day)
    assert expected == ROWS
    proxy.expire_after(EXPIRE_AFTER)
    dagrun = run(TEAM, big_day, clickhouse_settings=MULTIPART if upload == "multipart" else {})
    text = logged_text(caplog, capfd)
    assert dagrun.state == "success"
    assert _tries(dagrun) == {"wait_for_late_events": 1, "export": 2, "register": 1}

    requests = proxy.requests
    first = [r for r in requests if _attempt(r, 1)]
    retry = [r for r in requests if _attempt(r, 2) and _clickhouse(r)]
    assert proxy.expiries == 1 and EXPIRE_AFTER <= proxy.tripped_after < EXPIRE_AFTER + 2**17
    assert all(_clickhouse(r) for r in first) and {r.token for r in first} == {1} == proxy.expired_tokens
    rejected = [r for r in requests if r.expired]
    assert rejected == [r for r in first if r.expired] and proxy.expired_answers == len(rejected)
    assert sum(r.forwarded_bytes for r in first) >= EXPIRE_AFTER  # it expired while attempt 1 was uploading
    if upload == "multipart":
        kinds = Counter((r.method, r.query, r.status) for r in first)
        # Started, and the part on its way when the session expired landed (it was admitted before) …
        assert kinds[("POST", ("uploads",), 200)] == 1 and kinds[("PUT", PART, 200)] == 1
        # … what came after was refused: the other part (seen every time; had both parts been admitted in
        # time, it would have been the completion), then the abort. The upload never completed.
        assert kinds[("PUT", PART, 400)] + kinds[("POST", ("uploadId",), 400)] == 1
        assert kinds[("DELETE", ("uploadId",), 400)] == 1 and sum(kinds.values()) == 4
    else:
        assert [(r.method, r.status) for r in first] == [("PUT", 200), ("HEAD", 400)]
    # The retry assumed the role again: a token the proxy had not seen, never refused.
    assert retry and {r.token for r in retry} == {2} and not any(r.expired for r in retry)
    assert any(r.method == "PUT" and r.status == 200 for r in retry)

    failures = _failures(caplog)
    assert len(failures) == 1, failures
    assert "event=task_failed retryable=true reason=ClickHouseError" in failures[0] and "(S3_ERROR)" in failures[0]
    if upload == "multipart":
        assert "ExpiredToken Message: The provided token has expired." in failures[0]
    else:
        assert "Failed to get object info: No response body.. HTTP response code: 400" in failures[0]
    _assert_no_secrets(text, proxy)

    try1, try2 = (sorted(_names_of(requests, t)) for t in (1, 2))
    if upload == "multipart":
        assert _names(stack, duckling) == try2  # attempt 1's upload never completed: no object
        pending = stack.s3().list_multipart_uploads(Bucket=duckling.bucket, Prefix=_day_prefix()).get("Uploads", [])
        assert [u["Key"].rsplit("/", 1)[-1] for u in pending] == try1  # left for the bucket's lifecycle rule
    else:
        assert _names(stack, duckling) == try1 + try2  # attempt 1's object is an orphan, never registered
    assert _registered(duckling) == {try2[0]: True}
    assert _lake_rows(duckling) == expected


def test_registration_assumes_its_own_session(stack, big_day, proxy, caplog, capfd):
    """The export's session expires the moment registration starts reading: registration does not need it,
    it assumed the role itself, so nothing fails."""
    duckling = stack.new_duckling(TEAM, "expiry-between")
    proxy.expire_after(0, when=_duckdb, current_too=False)
    dagrun = run(TEAM, big_day)
    text = logged_text(caplog, capfd)
    assert dagrun.state == "success"
    assert _tries(dagrun) == {"wait_for_late_events": 1, "export": 1, "register": 1}
    requests = proxy.requests
    assert {r.token for r in requests if _clickhouse(r)} == {1} == proxy.expired_tokens
    assert {r.token for r in requests if _duckdb(r)} == {2}
    assert proxy.expiries == 1 and proxy.expired_answers == 0 and not _failures(caplog)
    _assert_no_secrets(text, proxy)

    (name,) = _names_of(requests, 1)
    assert _names(stack, duckling) == [name]
    assert _registered(duckling) == {name: True}
    assert _lake_rows(duckling) == ROWS


@pytest.mark.parametrize("lake", ["new-table", pytest.param("existing-table", marks=pytest.mark.slow)])
def test_token_expiring_during_registration_is_retried(stack, big_day, proxy, caplog, capfd, lake):
    """Registration's own session expires as it starts reading the exported file (DuckDB retries the read,
    then fails). New table: ducklake_add_data_files fails; existing table: the schema check's read does. The
    transaction is rolled back, the line says ExpiredToken and retryable, and the retry (a new session)
    swaps the file in."""
    duckling = stack.new_duckling(TEAM, f"expiry-reg-{lake}")
    text = ""
    earlier: set[str] = set()
    if lake == "existing-table":
        assert run(TEAM, big_day).state == "success"  # the day is in the lake; this run replaces it
        earlier = set(_registered(duckling))
        assert len(earlier) == 1
        text = logged_text(caplog, capfd)
        caplog.clear()
    start = len(proxy.requests)
    proxy.expire_after(0, when=_duckdb)
    dagrun = run(TEAM, big_day)
    text += logged_text(caplog, capfd)
    assert dagrun.state == "success"
    assert _tries(dagrun) == {"wait_for_late_events": 1, "export": 1, "register": 2}

    requests = proxy.requests[start:]
    reads = [r for r in requests if _duckdb(r)]
    rejected = [r for r in requests if r.expired]
    assert rejected and all(_duckdb(r) for r in rejected) and len({r.token for r in rejected}) == 1
    assert proxy.expired_answers == len(rejected)
    bad = rejected[0].token
    after = reads[max(i for i, r in enumerate(reads) if r.expired) + 1:]  # the retry's: a new session, never refused
    assert after and all(r.token > bad and not r.expired for r in after)

    failures = _failures(caplog)
    assert len(failures) == 1, failures
    assert "event=task_failed retryable=true reason=TransientError" in failures[0]
    assert "cannot read the exported file" in failures[0]
    assert "(HTTP 400 Bad Request): ExpiredToken: The provided token has expired." in failures[0]
    _assert_no_secrets(text, proxy)

    (name,) = _names_of(requests, 1) - earlier  # this run's object (registering it reads the earlier one too)
    assert sorted(_names(stack, duckling)) == sorted(earlier | {name})
    assert _registered(duckling) == {name: True, **{old: False for old in earlier}}
    assert _lake_rows(duckling) == ROWS
