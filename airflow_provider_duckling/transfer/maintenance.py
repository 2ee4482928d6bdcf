"""Lake maintenance for one duckling: merge small files without breaking the events' day layout, expire old
snapshots, delete what no snapshot references any more, and remove exported files whose registration never
happened.

Merging never makes a customer's query read more: events keep one UTC day per file (a day of several small
files becomes one file, a file spanning several days becomes one file per day; see
:mod:`~airflow_provider_duckling.transfer.day_layout`), because a day's query reads only the files whose
``timestamp`` statistics overlap it. Persons, which ``persons_current`` always reads whole, are merged by
``ducklake_merge_adjacent_files``.

Every deletion is of a file the catalog no longer references:

* files DuckLake itself scheduled for deletion (replaced by a re-run or merged, then their last snapshot
  expired) are removed by ``ducklake_cleanup_old_files``;
* orphans (exports never registered: a killed worker, a failed run) are objects under the duckling's
  ``backfill/`` prefix that the catalog does not know in any way (no data, delete or scheduled-deletion
  entry, not among the current snapshot's files), older than a safety window (a late ``register`` may
  still want a recent export).

Export-only files (a run with ``skip_ducklake_registration``) are intentional, not orphans: the register
task records each one with a marker object ``export_only/{its key}.json`` (see :func:`keep_export_only`),
and maintenance never deletes a file that has a marker. They stay until someone deletes the file and its
marker. Nothing outside ``backfill/`` and DuckLake's own table folders is ever touched. A dry run attaches
read-only and reports what it would do. Memory is bounded by DuckDB's ``memory_limit`` on the maintenance
connection and by merging at most ``max_merge_files`` files per run (the next run continues).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb

from airflow_provider_duckling.access.storage import DucklingStorage
from airflow_provider_duckling.common.quoting import duckdb_ident, duckdb_literal, duckdb_str
from airflow_provider_duckling.domain.tables import EVENTS, LAKE_SCHEMA, TABLES, TableSpec
from airflow_provider_duckling.hooks.ducklake import LAKE_ALIAS
from airflow_provider_duckling.transfer.day_layout import keep_day_layout
from airflow_provider_duckling.transfer.lake import qualified, table_exists, with_conflict_retries

log = logging.getLogger(__name__)

EXPORT_PREFIX = "backfill/"
EXPORT_ONLY_PREFIX = "export_only/"
"""Where the markers of export-only files live: ``export_only/`` + the file's key + ``.json``."""
_MARKER_SUFFIX = ".json"
#: Tables kept one UTC day per file (the customer reads them by day); the others are merged by DuckLake.
DAY_LAYOUT_TABLES = frozenset({EVENTS.name})


@dataclass
class MaintenanceReport:
    """What one maintenance pass did (or, in a dry run, would do)."""

    team_id: int
    dry_run: bool
    files_before: int = 0
    files_after: int = 0
    merged_files: int = 0
    days_rewritten: int = 0
    expired_snapshots: int = 0
    deleted_old_files: int = 0
    deleted_orphans: int = 0
    recent_orphans_kept: int = 0
    export_only_kept: int = 0
    orphan_paths: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_xcom(self) -> dict[str, Any]:
        out = asdict(self)
        out["orphan_paths"] = out["orphan_paths"][:20]  # a sample; the counts are the record
        return out


def live_files(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every data and delete file the current snapshot references, across the provider's tables."""
    files: set[str] = set()
    for table in TABLES.values():
        if table_exists(con, table):
            rows = con.execute(
                f"SELECT data_file, delete_file FROM ducklake_list_files({duckdb_literal(LAKE_ALIAS)}, "
                f"{duckdb_literal(table.name)}, schema => {duckdb_literal(LAKE_SCHEMA)})"
            ).fetchall()
            files.update(path for row in rows for path in row if path)
    return files


def _known_export_paths(con: duckdb.DuckDBPyConnection, data_path: str) -> set[str]:
    """Every export file the catalog knows in any way (live, in an old snapshot, or queued for deletion),
    as absolute URIs: DuckLake stores them absolute or relative to DATA_PATH."""
    metadata = duckdb_ident(f"__ducklake_metadata_{LAKE_ALIAS}")
    pattern = duckdb_literal(f"%{EXPORT_PREFIX}%")
    rows = con.execute(
        f"SELECT path FROM {metadata}.ducklake_data_file WHERE path LIKE {pattern} "
        f"UNION SELECT path FROM {metadata}.ducklake_delete_file WHERE path LIKE {pattern} "
        f"UNION SELECT path FROM {metadata}.ducklake_files_scheduled_for_deletion WHERE path LIKE {pattern}"
    ).fetchall()
    return {path if "://" in path or path.startswith("/") else data_path + path for (path,) in rows}


def export_only_files(storage: DucklingStorage) -> set[str]:
    """The files (as :meth:`DucklingStorage.uri` names them) that an export-only run wrote on purpose."""
    marker_root = storage.uri(EXPORT_ONLY_PREFIX)
    return {storage.uri(uri[len(marker_root):-len(_MARKER_SUFFIX)])
            for uri, _ in storage.list_objects(EXPORT_ONLY_PREFIX)
            if uri.startswith(marker_root + EXPORT_PREFIX) and uri.endswith(_MARKER_SUFFIX)}


def keep_export_only(storage: DucklingStorage, uris: list[str], facts: dict[str, Any]) -> list[str]:
    """Mark export-only files as intentional: one small JSON marker per file (``facts``: partition, table,
    run…), under ``export_only/``, which maintenance reads and never deletes. Returns the markers' keys."""
    import json

    keys = []
    for uri in uris:
        if not uri.startswith(storage.data_path + EXPORT_PREFIX):
            raise ValueError(f"refusing to mark {uri!r}: not an export of this duckling")
        key = EXPORT_ONLY_PREFIX + uri[len(storage.data_path):] + _MARKER_SUFFIX
        body = json.dumps({**facts, "file": uri}, sort_keys=True).encode()
        if storage.local_dir is not None:
            path = storage.local_dir / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        else:
            storage._s3_client().put_object(Bucket=storage.bucket, Key=key, Body=body,
                                            ContentType="application/json")
        keys.append(key)
    return keys


def _orphans(con: duckdb.DuckDBPyConnection, storage: DucklingStorage, older_than: dt.datetime,
             ) -> tuple[list[str], int, int]:
    """(exports the catalog has never known, older than ``older_than``; how many newer ones were kept;
    how many export-only files were kept)"""
    known = _known_export_paths(con, storage.data_path) | live_files(con)
    intentional = export_only_files(storage)
    old, recent, kept = [], 0, 0
    for uri, modified in storage.list_objects(EXPORT_PREFIX):
        if uri in known:
            continue
        if uri in intentional:
            kept += 1
        elif modified < older_than:
            old.append(uri)
        else:
            recent += 1
    return old, recent, kept


def _merge(con: duckdb.DuckDBPyConnection, table: TableSpec, report: MaintenanceReport, max_files: int) -> None:
    """Merge ``table``'s small files: events within each UTC day only, persons by DuckLake (a dry run only
    counts what the events' re-layout would rewrite)."""
    if table.name in DAY_LAYOUT_TABLES:
        layout = keep_day_layout(con, table, max_files=max_files, dry_run=report.dry_run)
        report.days_rewritten += layout.days_rewritten
        report.merged_files += 0 if report.dry_run else layout.files_replaced
        return
    if report.dry_run:
        return
    merged = with_conflict_retries(con, f"merge {qualified(table)}", lambda: con.execute(
        f"CALL ducklake_merge_adjacent_files({duckdb_literal(LAKE_ALIAS)}, {duckdb_literal(table.name)}, "
        f"schema => {duckdb_literal(LAKE_SCHEMA)}, max_compacted_files => {duckdb_literal(int(max_files))})"
    ).fetchall())
    report.merged_files += sum(int(row[2]) for row in merged)


def maintain_lake(
    con: duckdb.DuckDBPyConnection,
    storage: DucklingStorage,
    team_id: int,
    *,
    now: dt.datetime,
    snapshot_retention: dt.timedelta,
    orphans_before: dt.datetime,
    dry_run: bool = False,
    merge: bool = True,
    max_merge_files: int = 500,
) -> MaintenanceReport:
    """One maintenance pass over an attached duckling (``lake``); see the module docstring.

    :param snapshot_retention: snapshots older than this are expired (time travel back that far is kept),
        and files they alone referenced are deleted.
    :param orphans_before: the end of the safety window: an export that was never registered is deleted
        only if it was written before this instant.
    :param max_merge_files: at most about this many files are merged (events: re-laid out) per table in one
        pass; the next pass continues.
    """
    report = MaintenanceReport(team_id=team_id, dry_run=dry_run, files_before=len(live_files(con)))
    lake = duckdb_literal(LAKE_ALIAS)
    for table in TABLES.values():
        if merge and table_exists(con, table):
            _merge(con, table, report, max_merge_files)
    flag = "true" if dry_run else "false"
    expired = with_conflict_retries(con, "expire snapshots", lambda: con.execute(
        f"CALL ducklake_expire_snapshots({lake}, dry_run => {flag}, "
        f"older_than => {duckdb_literal(now - snapshot_retention)})"
    ).fetchall())
    report.expired_snapshots = len(expired)
    # Files DuckLake scheduled for deletion up to this moment, including those the expiry above just
    # released: no unexpired snapshot references them.
    old_files = con.execute(
        f"CALL ducklake_cleanup_old_files({lake}, dry_run => {flag}, older_than => {duckdb_literal(dt.datetime.now(dt.UTC))})"
    ).fetchall()
    report.deleted_old_files = len(old_files)
    orphans, report.recent_orphans_kept, report.export_only_kept = _orphans(con, storage, orphans_before)
    report.orphan_paths = orphans
    if orphans and not dry_run:
        storage.delete(orphans)
    report.deleted_orphans = len(orphans)
    report.files_after = report.files_before if dry_run else len(live_files(con))
    log.info(
        "event=maintenance team=%s dry_run=%s files_before=%d files_after=%d merged_files=%d days_rewritten=%d "
        "expired_snapshots=%d deleted_old_files=%d deleted_orphans=%d recent_orphans_kept=%d export_only_kept=%d",
        team_id, dry_run, report.files_before, report.files_after, report.merged_files, report.days_rewritten,
        report.expired_snapshots,
        report.deleted_old_files, report.deleted_orphans, report.recent_orphans_kept, report.export_only_kept,
    )
    return report


def limit_memory(con: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
    """Bound DuckDB's memory on this connection (merging spills to disk beyond it)."""
    con.execute(f"SET memory_limit = {duckdb_str(memory_limit)}")


def lake_initialised(hook: Any, duckling: Any, storage: DucklingStorage) -> bool:
    """Whether the duckling's catalog holds a DuckLake yet (maintenance never creates one)."""
    from airflow_provider_duckling.common.errors import LakeUnavailableError

    try:
        with hook.attach(duckling, storage, read_only=True):
            return True
    except LakeUnavailableError as exc:
        if "does not exist" in str(exc):
            return False
        raise


def run_maintenance(
    team_id: int,
    *,
    dry_run: bool,
    snapshot_retention: dt.timedelta,
    orphan_retention: dt.timedelta,
    merge: bool = True,
    registry_path: str | None = None,
    now: dt.datetime | None = None,
    orphans_before: dt.datetime | None = None,
) -> dict[str, Any]:
    """Attach one duckling (read-only for a dry run) and run :func:`maintain_lake` on it.

    :param orphans_before: overrides ``now - orphan_retention`` as the end of the orphans' safety window.
    """
    from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
    from airflow_provider_duckling.registry.catalog import get_duckling
    from airflow_provider_duckling.registry.settings import maintenance_memory_limit

    duckling = get_duckling(team_id, registry_path)
    if duckling.paused:
        log.info("event=maintenance_skipped team=%s reason=paused_in_registry", team_id)
        return MaintenanceReport(team_id=duckling.team_id, dry_run=dry_run, skipped="paused in the registry").to_xcom()
    hook = DuckLakeHook()
    storage = hook.storage(duckling)
    if not lake_initialised(hook, duckling, storage):
        log.info("event=maintenance_skipped team=%s reason=lake_not_initialised (nothing registered yet)", team_id)
        return MaintenanceReport(team_id=duckling.team_id, dry_run=dry_run).to_xcom()
    with hook.attach(duckling, storage, read_only=dry_run) as con:
        limit_memory(con, maintenance_memory_limit())
        now = now or dt.datetime.now(dt.UTC)
        report = maintain_lake(
            con, storage, duckling.team_id, now=now, snapshot_retention=snapshot_retention,
            orphans_before=orphans_before or now - orphan_retention, dry_run=dry_run, merge=merge,
        )
    return report.to_xcom()
