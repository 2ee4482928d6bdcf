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
        export_identity: clickhouse   # optional: how ClickHouse writes (default [duckling] export_identity)
        paused: false                 # optional: true keeps the team's DAGs visible but scheduling nothing
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

from airflow_provider_duckling.common.errors import (
    PartitionError,
    RegistryError,
    UnknownDucklingError,
    quoted,
)
from airflow_provider_duckling.common.redaction import scrub
from airflow_provider_duckling.domain.partitions import EPOCH, validate_team_id
from airflow_provider_duckling.registry import settings

DEFAULT_CATALOG_CONN_ID = "ducklake_default"

# Matched with ``fullmatch`` and ``re.ASCII``: ``$`` would accept a trailing newline and ``\d`` a full-width digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}", re.ASCII)
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    re.ASCII,
)
_DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}", re.ASCII)
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}", re.ASCII)
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9+=,.@:/_-]{2,1224}", re.ASCII)
_CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}", re.ASCII)
_PRINTABLE = re.compile(r"[\x21-\x7e]+", re.ASCII)  # no whitespace, no control characters, ASCII only
_FIELD_NAME = re.compile(r"[A-Za-z0-9_]{1,40}", re.ASCII)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
DEFAULT_DB_PORT = 5432
"""An entry without ``db_port`` is compared as this port when checking that no two entries share a catalog (its
connection may name another; the attach-time owner mark is the guard that knows)."""
EXPORT_IDENTITIES = settings.EXPORT_IDENTITIES
"""How ClickHouse authenticates its writes to a duckling's bucket: see :func:`settings.export_identity`."""
MAX_REGISTRY_BYTES = 16 * 1024 * 1024
"""The registry file's size limit (16 MiB, about 60,000 entries), checked before it is read: a larger file is
refused so that parsing stays well inside the DAG import timeout."""
_FIELDS = {
    "team_id", "bucket", "bucket_region", "db_host", "db_port", "db_name", "cross_account_role_arn",
    "cross_account_external_id", "catalog_conn_id", "start_date", "export_identity", "paused",
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
    export_identity: str | None = None
    """``assumed_role`` or ``clickhouse``; ``None`` follows ``[duckling] export_identity``."""
    paused: bool = False
    """A durable pause: the team's DAGs stay visible and schedule nothing; maintenance and reconciliation skip it."""

    @classmethod
    def from_dict(cls, raw: Any, where: str = "entry") -> Duckling:
        """Build and validate one entry; every error names the entry and the field."""
        if not isinstance(raw, dict):
            raise RegistryError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
        unknown = [k for k in raw if not (isinstance(k, str) and k in _FIELDS)]
        if unknown:
            names = [scrub(k) if isinstance(k, str) and _FIELD_NAME.fullmatch(k) else quoted(k, 30) for k in unknown[:5]]
            raise RegistryError(f"{where}: unknown field(s) {', '.join(sorted(names))}{', …' if len(unknown) > 5 else ''}")
        try:
            team_id = validate_team_id(raw.get("team_id"))
        except PartitionError as exc:
            raise RegistryError(f"{where}: {exc}") from None
        where = f"{where} (team {team_id})"

        def text(name: str, pattern: re.Pattern[str], hint: str, required: bool = True) -> str | None:
            value = raw.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not _PRINTABLE.fullmatch(value) or not pattern.fullmatch(value):
                shown = "missing" if value is None else "invalid"
                raise RegistryError(f"{where}: {shown} {name}: expected {hint}")
            return value

        bucket = text("bucket", _BUCKET, "an S3 bucket name (3-63 of a-z 0-9 . -)")
        if ".." in bucket or bucket.startswith("xn--") or _is_ip(bucket):
            raise RegistryError(f"{where}: invalid bucket: expected an S3 bucket name (3-63 of a-z 0-9 . -)")
        db_host = raw.get("db_host")
        if not isinstance(db_host, str) or not _PRINTABLE.fullmatch(db_host) or not (
            _HOSTNAME.fullmatch(db_host) or _is_ip(db_host)
        ):
            raise RegistryError(f"{where}: {'missing' if db_host is None else 'invalid'} db_host: expected a host name or IP address")
        db_port = raw.get("db_port")
        if db_port is not None and (isinstance(db_port, bool) or not isinstance(db_port, int) or not 0 < db_port < 65536):
            raise RegistryError(f"{where}: invalid db_port: expected 1-65535")
        start = raw.get("start_date")
        if start is not None:
            start = _date(start, f"{where}: invalid start_date")
        identity = raw.get("export_identity")
        if identity is not None and (not isinstance(identity, str) or identity not in EXPORT_IDENTITIES):
            raise RegistryError(f"{where}: invalid export_identity: expected {' or '.join(EXPORT_IDENTITIES)}")
        paused = raw.get("paused", False)
        if not isinstance(paused, bool):
            raise RegistryError(f"{where}: invalid paused: expected true or false")
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
            export_identity=identity,
            paused=paused,
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
        if self.export_identity is not None:
            out["export_identity"] = self.export_identity
        if self.paused:
            out["paused"] = True
        return out


def _is_ip(value: str) -> bool:
    if "%" in value:  # an IPv6 scope id ("fe80::1%eth0") is a local interface name, never a catalog address
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def catalog_identity(duckling: Duckling) -> tuple[str, int, str]:
    """What makes two entries the same catalog: the host lower-cased (an IP address in its canonical form),
    the port with the default made explicit, and the database name."""
    host = duckling.db_host.lower()
    if _is_ip(host):
        host = ipaddress.ip_address(host).compressed
    return host, duckling.db_port or DEFAULT_DB_PORT, duckling.db_name


def _date(value: Any, message: str) -> dt.date:
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, str):
        try:
            if not _DAY.fullmatch(value):
                raise ValueError(value)
            value = dt.date.fromisoformat(value)
        except ValueError:
            raise RegistryError(f"{message} {quoted(value)}: expected YYYY-MM-DD") from None
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
    by_catalog: dict[tuple[str, int, str], Duckling] = {}
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
        catalog = catalog_identity(duckling)
        other = by_catalog.get(catalog)
        if other is not None:
            raise RegistryError(
                f"{source}: ducklings[{index}] (team {duckling.team_id}): catalog {duckling.db_name} on "
                f"{duckling.db_host} is already team {other.team_id}'s; every duckling needs its own catalog "
                f"(an entry without db_port is taken as port {DEFAULT_DB_PORT}: write db_port if they differ)"
            )
        entries[duckling.team_id] = by_bucket[duckling.bucket] = by_catalog[catalog] = duckling
    return entries


def read_limited_text(path: Path, what: str, error: type[Exception] = RegistryError,
                      limit: int = MAX_REGISTRY_BYTES) -> str | None:
    """The text of a small local file as strict UTF-8; ``None`` when there is no file.

    The size is checked before anything is read (and the read itself stops one byte past ``limit``, in case
    the file grows meanwhile); undecodable bytes are refused with their offset, never replaced."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(limit + 1) if size <= limit else b""
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"cannot read {what} {path.name}: {type(exc).__name__}") from None
    if size > limit or len(data) > limit:
        raise error(f"cannot read {what} {path.name}: larger than the {limit // (1024 * 1024)} MiB limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"cannot read {what} {path.name}: not UTF-8 (byte {exc.start})") from None


def read_registry_text(path: Path) -> str | None:
    """The registry file's text; ``None`` when there is no file (an empty registry).

    A file over :data:`MAX_REGISTRY_BYTES` (16 MiB) or not valid UTF-8 is refused before parsing."""
    return read_limited_text(path, "duckling registry")


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_INT_DIGITS = 30


class _StrictLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe YAML that refuses what would silently change the meaning of the registry: a key given twice in
    one mapping (the second would win), and over-long integers (converted only when short)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise yaml.constructor.ConstructorError(None, None, "merge keys (<<) are not allowed",
                                                            key_node.start_mark)
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: the base class reports it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {quoted(key, 30)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        if len(str(node.value)) > _MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(None, None, "integer too long", node.start_mark)
        return super().construct_yaml_int(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)


def _refuse_aliases(root: Any) -> None:
    """Refuse anchors/aliases: a node reached twice (``*ref``, or a cycle) could expand an entry far past the
    file's size (an alias bomb). Iterative, so deep nesting cannot exhaust the stack."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise RegistryError("aliases (*name) are not allowed")
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                stack.extend((key_node, value_node))


def _load_yaml(text: str) -> Any:
    """One YAML document with the strict loader; several documents are refused (``get_single_node``)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_aliases(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_registry_text(text: str | None, path: Path) -> dict[int, Duckling]:
    """Parse and validate the text of the registry file at ``path`` (YAML, so JSON too).

    Only :class:`RegistryError` comes out: a syntax error, several documents, a duplicate key at any level,
    an alias, an over-long integer or a nesting too deep are all reported as one short line."""
    if text is None:
        return {}
    try:
        data = _load_yaml(text)
    except RegistryError as exc:
        raise RegistryError(f"cannot read duckling registry {path.name}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = ", ".join(str(part) for part in (exc.context, exc.problem) if part) or type(exc).__name__
        problem = scrub(" ".join(problem.split()))[:120]
        raise RegistryError(f"cannot read duckling registry {path.name}: {problem}{where}") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RegistryError(f"cannot read duckling registry {path.name}: {type(exc).__name__}") from None
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
