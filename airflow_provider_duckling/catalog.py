"""The duckling registry: which teams have a duckling, and where its bucket and catalog are.

It mirrors the original system's ``DuckLakeCatalog`` model. It lives in a YAML file (by default
``ducklings.yaml`` beside the DAG files; ``[duckling] registry_path`` / ``AIRFLOW__DUCKLING__REGISTRY_PATH``
overrides it) so that DAG parsing reads one local file and never the network. Secrets are not stored here:
the catalog's login and password come from the Airflow connection named by ``catalog_conn_id``.

Example::

    ducklings:
      - team_id: 12345
        bucket: acme-duckling
        bucket_region: us-east-1
        db_host: acme-catalog.cluster-abc.us-east-1.rds.amazonaws.com
        db_name: ducklake
        cross_account_role_arn: arn:aws:iam::111122223333:role/duckling-writer
        cross_account_external_id: posthog-12345
        start_date: 2024-01-01        # optional: first day to back-fill
        catalog_conn_id: ducklake_default  # optional
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_duckling import settings
from airflow_provider_duckling.errors import RegistryError, UnknownDucklingError
from airflow_provider_duckling.partitions import EPOCH, validate_team_id

DEFAULT_CATALOG_CONN_ID = "ducklake_default"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9+=,.@:/_-]{2,1224}$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_FIELDS = {
    "team_id", "bucket", "bucket_region", "db_host", "db_port", "db_name", "cross_account_role_arn",
    "cross_account_external_id", "catalog_conn_id", "start_date",
}


@dataclass(frozen=True)
class Duckling:
    """One customer's lake: its bucket, its PostgreSQL catalog and the role that reaches them."""

    team_id: int
    bucket: str
    bucket_region: str
    db_host: str
    db_name: str
    cross_account_role_arn: str
    cross_account_external_id: str = field(repr=False)
    db_port: int | None = None
    catalog_conn_id: str = DEFAULT_CATALOG_CONN_ID
    start_date: dt.date | None = None

    @classmethod
    def from_dict(cls, raw: Any, where: str = "entry") -> Duckling:
        """Build and validate one entry; every error names the entry and the field."""
        if not isinstance(raw, dict):
            raise RegistryError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
        unknown = sorted(set(map(str, raw)) - _FIELDS)
        if unknown:
            raise RegistryError(f"{where}: unknown field(s) {', '.join(unknown)}")
        try:
            team_id = validate_team_id(raw.get("team_id"))
        except Exception as exc:
            raise RegistryError(f"{where}: {exc}") from None
        where = f"{where} (team {team_id})"

        def text(name: str, pattern: re.Pattern[str], hint: str, required: bool = True) -> str | None:
            value = raw.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not pattern.match(value):
                shown = "missing" if value is None else "invalid"
                raise RegistryError(f"{where}: {shown} {name}: expected {hint}")
            return value

        bucket = text("bucket", _BUCKET, "an S3 bucket name (3-63 of a-z 0-9 . -)")
        if ".." in bucket or bucket.startswith("xn--") or _is_ip(bucket):
            raise RegistryError(f"{where}: invalid bucket: expected an S3 bucket name (3-63 of a-z 0-9 . -)")
        db_host = raw.get("db_host")
        if not isinstance(db_host, str) or not (_HOSTNAME.match(db_host) or _is_ip(db_host)):
            raise RegistryError(f"{where}: {'missing' if db_host is None else 'invalid'} db_host: expected a host name or IP address")
        db_port = raw.get("db_port")
        if db_port is not None and (isinstance(db_port, bool) or not isinstance(db_port, int) or not 0 < db_port < 65536):
            raise RegistryError(f"{where}: invalid db_port: expected 1-65535")
        start = raw.get("start_date")
        if start is not None:
            start = _date(start, f"{where}: invalid start_date")
        return cls(
            team_id=team_id,
            bucket=bucket,
            bucket_region=text("bucket_region", _REGION, "an AWS region such as us-east-1"),
            db_host=db_host,
            db_port=db_port,
            db_name=text("db_name", _DB_NAME, "a PostgreSQL database name (letters, digits, _)"),
            cross_account_role_arn=text("cross_account_role_arn", _ROLE_ARN, "arn:aws:iam::<12 digits>:role/<name>"),
            cross_account_external_id=text(
                "cross_account_external_id", _EXTERNAL_ID, "2-1224 of A-Z a-z 0-9 + = , . @ : / _ -"
            ),
            catalog_conn_id=text("catalog_conn_id", _CONN_ID, "an Airflow connection id", required=False)
            or DEFAULT_CATALOG_CONN_ID,
            start_date=start,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "team_id": self.team_id,
            "bucket": self.bucket,
            "bucket_region": self.bucket_region,
            "db_host": self.db_host,
            "db_name": self.db_name,
            "cross_account_role_arn": self.cross_account_role_arn,
            "cross_account_external_id": self.cross_account_external_id,
            "catalog_conn_id": self.catalog_conn_id,
        }
        if self.db_port is not None:
            out["db_port"] = self.db_port
        if self.start_date is not None:
            out["start_date"] = self.start_date.isoformat()
        return out


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _date(value: Any, message: str) -> dt.date:
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value)
        except ValueError:
            raise RegistryError(f"{message} {value!r}: expected YYYY-MM-DD") from None
    if not isinstance(value, dt.date):
        raise RegistryError(f"{message}: expected YYYY-MM-DD")
    if value < EPOCH:
        raise RegistryError(f"{message} {value}: before 1970-01-01")
    return value


def parse_registry(data: Any, source: str = "registry") -> dict[int, Duckling]:
    """Validate a parsed registry document; team ids must be unique."""
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("ducklings", []), list):
        raise RegistryError(f"{source}: expected a mapping with a 'ducklings' list")
    entries: dict[int, Duckling] = {}
    by_bucket: dict[str, Duckling] = {}
    by_catalog: dict[tuple[str, int | None, str], Duckling] = {}
    for index, raw in enumerate(data.get("ducklings") or []):
        duckling = Duckling.from_dict(raw, where=f"{source}: ducklings[{index}]")
        if duckling.team_id in entries:
            raise RegistryError(f"{source}: ducklings[{index}]: team {duckling.team_id} is listed twice")
        other = by_bucket.get(duckling.bucket)
        if other is not None:
            raise RegistryError(
                f"{source}: ducklings[{index}] (team {duckling.team_id}): bucket {duckling.bucket} is already "
                f"team {other.team_id}'s; every duckling needs its own bucket"
            )
        catalog = (duckling.db_host, duckling.db_port, duckling.db_name)
        other = by_catalog.get(catalog)
        if other is not None:
            raise RegistryError(
                f"{source}: ducklings[{index}] (team {duckling.team_id}): catalog {duckling.db_name} on "
                f"{duckling.db_host} is already team {other.team_id}'s; every duckling needs its own catalog"
            )
        entries[duckling.team_id] = by_bucket[duckling.bucket] = by_catalog[catalog] = duckling
    return entries


def read_registry_text(path: Path) -> str | None:
    """The registry file's text; ``None`` when there is no file (an empty registry)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"cannot read duckling registry {path}: {type(exc).__name__}") from None


def parse_registry_text(text: str | None, path: Path) -> dict[int, Duckling]:
    """Parse and validate the text of the registry file at ``path`` (YAML, so JSON too)."""
    if text is None:
        return {}
    try:
        # The C loader when PyYAML has it: parsing thousands of entries at every DAG parse adds up.
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise RegistryError(f"cannot read duckling registry {path}: {type(exc).__name__}") from None
    return parse_registry(data, source=str(path.name))


def load_registry(path: str | Path | None = None) -> dict[int, Duckling]:
    """Read and validate the registry file. A missing file is an empty registry; a broken one raises."""
    path = Path(path) if path else settings.registry_path()
    return parse_registry_text(read_registry_text(path), path)


def get_duckling(team_id: object, path: str | Path | None = None) -> Duckling:
    """The registry entry of ``team_id``, or :class:`UnknownDucklingError`."""
    team = validate_team_id(team_id)
    registry = load_registry(path)
    try:
        return registry[team]
    except KeyError:
        raise UnknownDucklingError(f"team {team} has no duckling in the registry") from None


def write_registry(ducklings: dict[int, Duckling] | list[Duckling], path: str | Path) -> None:
    """Write a registry file atomically (the demo and tests use it; so will a `duckling catalog add` CLI)."""
    items = ducklings.values() if isinstance(ducklings, dict) else ducklings
    doc = {"ducklings": [d.to_dict() for d in sorted(items, key=lambda d: d.team_id)]}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
