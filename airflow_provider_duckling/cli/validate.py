"""``duckling catalog validate``: can every piece a duckling's runs need be reached, right now?

Checked without writing anything: ClickHouse (shared by all teams) answers and has the source tables; per
duckling, its ``ducklake`` connection is defined, its role can be assumed, its bucket answers to the role's
credentials (and is in the registered region), and its catalog attaches read-only (a catalog never used yet
is fine: the first run initialises it). Each problem is one line naming the team and the broken piece;
error text is scrubbed of secrets.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.console import Console

from airflow_provider_duckling.access.credentials import assume_duckling_role
from airflow_provider_duckling.access.storage import DucklingStorage
from airflow_provider_duckling.cli.errors import OK, PROBLEMS
from airflow_provider_duckling.cli.render import emit_json, progress, status_text, table
from airflow_provider_duckling.cli.selection import registry_file, select
from airflow_provider_duckling.common.errors import LakeUnavailableError
from airflow_provider_duckling.common.redaction import register_secret, scrub
from airflow_provider_duckling.health.tallies import embedded_catalog_missing, never_used
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling

PIECES = ("connection", "role", "bucket", "catalog")
SOURCE_TABLES = ("events", "person", "person_distinct_id2")


@dataclass(frozen=True)
class Check:
    """One piece's verdict: ``ok`` True/False, or None when it could not be checked (an earlier piece failed)."""

    piece: str
    ok: bool | None
    detail: str


def _guard(piece: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every failure is a finding, reported as one scrubbed line
        return Check(piece, False, _one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = " ".join(text.split()) if text else type(exc).__name__
    return scrub(first)[:400]


def check_clickhouse() -> Check:
    """The shared source: the connection answers and its database holds the tables the exports read."""

    def run() -> Check:
        hook = ClickHouseHook()
        names = {row[0] for row in hook.query_rows(
            "SELECT name FROM system.tables WHERE database = {db:String}", {"db": hook.database})}
        missing = [t for t in SOURCE_TABLES if t not in names]
        if missing:
            return Check("clickhouse", False, f"database {hook.database} has no table {', '.join(missing)} "
                                              f"(connection {hook.clickhouse_conn_id})")
        return Check("clickhouse", True, f"{hook.clickhouse_conn_id}: {', '.join(SOURCE_TABLES)} in {hook.database}")

    return _guard("clickhouse", run)


def check_duckling(duckling: Duckling) -> list[Check]:
    """Connection, role, bucket and catalog of one duckling, each independently where possible."""
    register_secret(duckling.cross_account_external_id)
    hook = DuckLakeHook()
    try:
        settings = hook.settings(duckling)
    except Exception as exc:  # noqa: BLE001
        skipped = [Check(p, None, "not checked (no connection)") for p in PIECES[1:]]
        return [Check("connection", False, _one_line(exc)), *skipped]
    checks = [Check("connection", True, settings.conn_id)]
    if settings.local_root is not None:
        storage = hook.storage(duckling, settings)
        checks += [Check("role", None, "embedded (no role)"), Check("bucket", None, f"embedded ({storage.data_path})")]
    else:
        credentials = None
        try:
            credentials = assume_duckling_role(settings.aws_conn_id, duckling)
            checks.append(Check("role", True, "assumed"))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check("role", False, _one_line(exc)))
        storage = DucklingStorage(duckling.bucket, duckling.bucket_region, credentials,
                                  endpoint_url=settings.s3_endpoint_url)
        if credentials is None:
            checks.append(Check("bucket", None, "not checked (no role credentials)"))
        else:
            checks.append(_guard("bucket", lambda: _check_bucket(duckling, storage)))
    checks.append(_guard("catalog", lambda: _check_catalog(hook, duckling, storage)))
    return checks


def _check_bucket(duckling: Duckling, storage: DucklingStorage) -> Check:
    """HEAD the bucket with the role's session credentials: it exists, the role may list it, region matches."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError, EndpointConnectionError

    creds = storage.credentials
    assert creds is not None  # only called with the role's credentials
    client = boto3.client(
        "s3", region_name=duckling.bucket_region, endpoint_url=storage.endpoint_url,
        aws_access_key_id=creds.key_id, aws_secret_access_key=creds.secret, aws_session_token=creds.session_token,
        config=Config(connect_timeout=10, read_timeout=20, retries={"max_attempts": 2}),
    )
    where = f"s3://{duckling.bucket}"
    try:
        answer = client.head_bucket(Bucket=duckling.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if code in ("404", "NoSuchBucket"):
            return Check("bucket", False, f"{where} does not exist")
        if code in ("403", "AccessDenied"):
            return Check("bucket", False, f"{where}: access denied to the duckling's role (bucket policy / role policy)")
        if code in ("301", "PermanentRedirect") and headers.get("x-amz-bucket-region"):
            return Check("bucket", False, f"{where} is in {headers['x-amz-bucket-region']}, the registry says "
                                          f"{duckling.bucket_region}")
        return Check("bucket", False, f"{where}: S3 answered {code or 'an error'}")
    except EndpointConnectionError as exc:
        return Check("bucket", False, f"{where}: S3 endpoint unreachable ({_one_line(exc)})")
    region = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
    if region and region != duckling.bucket_region:
        return Check("bucket", False, f"{where} is in {region}, the registry says {duckling.bucket_region}")
    return Check("bucket", True, where)


def _check_catalog(hook: DuckLakeHook, duckling: Duckling, storage: DucklingStorage) -> Check:
    """Attach read-only (nothing is written, not even an owner mark) and count the snapshots; a catalog never
    used yet (an empty PostgreSQL database, or no embedded catalog file) is fine: the first run creates it."""
    missing = embedded_catalog_missing(duckling, hook)
    if missing is not None:
        return Check("catalog", True, f"not initialised yet (the first run creates {missing})")
    try:
        with hook.attach(duckling, storage, read_only=True) as con:
            (snapshots,) = con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()
    except LakeUnavailableError as exc:
        if never_used(exc):
            return Check("catalog", True, "reachable, not initialised yet (the first run does it)")
        raise
    return Check("catalog", True, f"{snapshots} snapshot(s)")


def run(args: argparse.Namespace, out: Console) -> int:
    """Check the selected ducklings (all by default); exit 1 and one line per problem if anything is broken."""
    ducklings = select(args, args.teams)
    if not ducklings:
        if args.json:
            emit_json(out, {"clickhouse": None, "teams": [], "problems": []})
        else:
            out.print(f"No ducklings in {registry_file(args)}.")
        return OK
    clickhouse = check_clickhouse()
    results: dict[int, list[Check]] = {}
    with progress(out, "checking ducklings", len(ducklings)) as advance, \
            ThreadPoolExecutor(max_workers=max(1, min(args.parallel, len(ducklings)))) as pool:
        futures = {d.team_id: pool.submit(check_duckling, d) for d in ducklings}
        for team_id, future in futures.items():
            results[team_id] = future.result()
            advance(note=f"team {team_id}")

    problems: list[str] = []
    if not clickhouse.ok:
        teams = [str(d.team_id) for d in ducklings]
        who = f"all teams ({', '.join(teams)})" if len(teams) <= 10 else f"all {len(teams)} teams"
        problems.append(f"{who}: clickhouse: {clickhouse.detail}")
    for d in ducklings:
        problems += [f"team {d.team_id}: {c.piece}: {c.detail}" for c in results[d.team_id] if c.ok is False]
    if args.json:
        emit_json(out, {
            "clickhouse": _check_json(clickhouse),
            "teams": [{"team_id": d.team_id, "checks": [_check_json(c) for c in results[d.team_id]]} for d in ducklings],
            "problems": problems,
        })
        return PROBLEMS if problems else OK
    out.print(f"ClickHouse: {'ok' if clickhouse.ok else 'PROBLEM'} ({clickhouse.detail})")
    rows = [(d.team_id, *(status_text(c.ok, _cell(c)) for c in results[d.team_id])) for d in ducklings]
    out.print(table(None, ("team", *PIECES), rows, right=("team",)))
    if problems:
        out.print(f"{len(problems)} problem(s):")
        for line in problems:
            out.print(line)
        return PROBLEMS
    out.print(f"All {len(ducklings)} duckling(s) reachable.")
    return OK


def _check_json(check: Check) -> dict[str, object]:
    """``ok``: true, false, or null when the piece could not be checked (or does not apply, embedded)."""
    return {"piece": check.piece, "ok": check.ok, "detail": check.detail}


def _cell(check: Check) -> str:
    if check.ok is None:
        return "–"
    if check.ok:
        return "ok (new)" if check.piece == "catalog" and "not initialised" in check.detail else "ok"
    return "FAILED"
