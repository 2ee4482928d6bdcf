"""``duckling catalog add|list|pause|resume``: the registry, edited and shown safely.

``add`` is the new-duckling step: it validates the entry exactly as the DAG file will (fields, and no
bucket or catalog shared with another team), refuses a team that is already there, and writes the file
atomically under a lock, so a mistake never reaches the DAG processor and two operators never lose an entry.
``pause``/``resume`` flip one entry's ``paused`` field the same way. ``list --json`` masks external ids
exactly as the table does.
"""

from __future__ import annotations

import argparse
import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from airflow_provider_duckling.cli.errors import OK, UsageError
from airflow_provider_duckling.cli.render import emit_json, mask, table
from airflow_provider_duckling.cli.selection import discovered_dates, registry_file, start_label
from airflow_provider_duckling.common.errors import RegistryError
from airflow_provider_duckling.common.redaction import register_secret
from airflow_provider_duckling.domain.partitions import validate_team_id
from airflow_provider_duckling.registry.catalog import Duckling, load_registry, parse_registry, write_registry
from airflow_provider_duckling.registry.state import StartDates


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the registry between concurrent ``catalog add`` calls."""
    lock = path.with_name(f".{path.name}.lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _external_id(value: str) -> str:
    """``-`` reads the external id from stdin (asked for, unechoed, on a terminal), keeping it out of shell
    history and ``ps``."""
    if value != "-":
        return value
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("external id: ").strip()
    return sys.stdin.readline().strip()


def add(args: argparse.Namespace, out: Console) -> int:
    """Validate and append one registry entry; a duplicate team or any invalid field writes nothing."""
    path = registry_file(args)
    raw: dict[str, object] = {
        "team_id": args.team_id,
        "bucket": args.bucket,
        "bucket_region": args.region,
        "db_host": args.db_host,
        "db_name": args.db_name,
        "cross_account_role_arn": args.role_arn,
        "cross_account_external_id": _external_id(args.external_id),
    }
    optional = {"db_port": args.db_port, "start_date": args.start_date, "catalog_conn_id": args.catalog_conn_id,
                "export_identity": args.export_identity}
    raw.update({k: v for k, v in optional.items() if v is not None})
    register_secret(str(raw["cross_account_external_id"]))
    duckling = Duckling.from_dict(raw, where="new entry")
    if not path.parent.is_dir():
        raise UsageError(f"registry folder {path.parent} does not exist; nothing written")
    with _locked(path):
        current = load_registry(path)
        if duckling.team_id in current:
            raise UsageError(
                f"team {duckling.team_id} already has a duckling in {path.name} (bucket {current[duckling.team_id].bucket}); "
                "nothing written. Edit the file to change an existing entry."
            )
        merged = [*current.values(), duckling]
        # The same checks the DAG file applies when it loads the registry (own bucket, own catalog).
        try:
            parse_registry({"ducklings": [d.to_dict() for d in merged]}, source=f"{path.name} with the new entry")
        except RegistryError as exc:
            raise UsageError(f"{exc}; nothing written") from None
        write_registry(merged, path)
    out.print(f"Added team {duckling.team_id} to {path}:")
    out.print(_entries_table([duckling], {}))
    start = (duckling.start_date.isoformat() if duckling.start_date
             else "the first day with data, once duckling_discover_start_dates has found it (within 15 min)")
    out.print(
        f"Next: duckling_events_backfill_team_{duckling.team_id} and duckling_persons_backfill_team_{duckling.team_id} "
        f"appear on the next DAG parse and catch up from {start}.\n"
        f"Check that every piece is reachable first: duckling catalog validate {duckling.team_id}"
    )
    return OK


def list_entries(args: argparse.Namespace, out: Console) -> int:
    """Show the registry as a table (external ids masked), with each team's start date and where it came from."""
    path = registry_file(args)
    ducklings = load_registry(path)
    try:
        discovered = discovered_dates(args)
    except Exception:  # noqa: BLE001 - start dates are a detail of the listing, never a reason to fail it
        discovered = {}
    entries = sorted(ducklings.values(), key=lambda d: d.team_id)
    if args.json:
        emit_json(out, {"registry": str(path), "ducklings": [_entry_json(d, discovered) for d in entries]})
        return OK
    if not ducklings:
        out.print(f"No ducklings in {path}. Add one with: duckling catalog add --help")
        return OK
    out.print(_entries_table(entries, discovered, title=f"{len(ducklings)} duckling(s) in {path}"))
    return OK


def _entry_json(duckling: Duckling, discovered: StartDates) -> dict[str, Any]:
    """One entry as the registry holds it, external id masked, plus the start dates in effect."""
    register_secret(duckling.cross_account_external_id)
    entry = duckling.to_dict()
    entry["cross_account_external_id"] = mask(duckling.cross_account_external_id)
    entry.setdefault("catalog_conn_id", duckling.catalog_conn_id)
    entry.setdefault("paused", bool(getattr(duckling, "paused", False)))
    entry["discovered_start_dates"] = {table: days[duckling.team_id].isoformat()
                                       for table, days in sorted(discovered.items()) if duckling.team_id in days}
    return entry


def _entries_table(ducklings: list[Duckling], discovered: StartDates, title: str | None = None) -> Any:
    rows = []
    for d in ducklings:
        register_secret(d.cross_account_external_id)
        port = f":{d.db_port}" if d.db_port else ""
        rows.append((d.team_id, d.bucket, d.bucket_region, f"{d.db_name} on {d.db_host}{port}", d.cross_account_role_arn,
                     mask(d.cross_account_external_id), start_label(d, discovered), d.catalog_conn_id,
                     getattr(d, "export_identity", None) or "default", "paused" if getattr(d, "paused", False) else "no"))
    columns = ("team", "bucket", "region", "catalog", "role", "external id", "start date", "connection",
               "export identity", "paused")
    return table(title, columns, rows, right=("team",))


def pause(args: argparse.Namespace, out: Console) -> int:
    """Set the team's ``paused`` field: its DAGs stay visible and schedule nothing."""
    return _set_paused(args, out, True)


def resume(args: argparse.Namespace, out: Console) -> int:
    """Clear the team's ``paused`` field: its DAGs schedule again (catching up what they missed)."""
    return _set_paused(args, out, False)


def _set_paused(args: argparse.Namespace, out: Console, paused: bool) -> int:
    """Rewrite the registry with one entry's ``paused`` changed, atomically under the ``add`` lock; an unknown
    team writes nothing, and an entry already in that state is left as it is (the file is not rewritten)."""
    from dataclasses import replace

    path = registry_file(args)
    team_id = validate_team_id(args.team)
    with _locked(path):
        current = load_registry(path)
        if team_id not in current:
            raise UsageError(f"team {team_id} has no duckling in {path.name} (see: duckling catalog list); nothing written")
        if bool(getattr(current[team_id], "paused", False)) == paused:
            out.print(f"Team {team_id} is already {'paused' if paused else 'active'}; {path} unchanged.")
            return OK
        current[team_id] = replace(current[team_id], paused=paused)
        write_registry(list(current.values()), path)
    if paused:
        out.print(f"Paused team {team_id} in {path}: from the DAG file's next parse its DAGs stay visible and schedule "
                  f"nothing. Resume with: duckling catalog resume {team_id}")
    else:
        out.print(f"Resumed team {team_id} in {path}: from the DAG file's next parse its DAGs schedule again.")
    return OK
