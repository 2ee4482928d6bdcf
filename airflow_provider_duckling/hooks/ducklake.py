"""DuckLakeHook: DuckDB with DuckLake, attached to one duckling, without ever touching the network for code.

Extensions are loaded offline by :mod:`airflow_provider_duckling.access.extensions` (an embedded lake needs
only DuckLake; S3 and a PostgreSQL catalog add httpfs and postgres_scanner). Every connection runs in UTC
so that day boundaries of TIMESTAMPTZ columns are UTC days. The catalog's password goes into a DuckDB
secret (a quoted literal in a statement that is never logged and never repeated in an error), never into
the ATTACH string; the S3 secret holds the assumed role's session credentials and is scoped to the
duckling's bucket.

Connection type ``ducklake`` (default id ``ducklake_default``): login/password = the catalog's PostgreSQL
user; port = default catalog port; extra:

* ``aws_conn_id`` - Amazon connection whose identity assumes the duckling roles (default ``aws_default``)
* ``s3_endpoint_url`` - S3-compatible endpoint (MinIO, moto); omit for AWS
* ``local_root`` - embedded mode: data under ``<local_root>/<bucket>/``, catalog in
  ``<local_root>/<db_name>.ducklake`` (a DuckDB file), no S3, no PostgreSQL, no role
* ``sslmode`` - libpq sslmode for the catalog (default ``prefer``)
* ``console_url`` - template of the "Exported objects" task link (``{bucket}``, ``{prefix}``, ``{region}``);
  the AWS S3 console when unset

Host is optional: a catalog server that the connection's "Test" button logs in to (each duckling names
its own catalog host and database in the registry).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
from airflow.sdk import BaseHook

from airflow_provider_duckling.access.connection_extras import connection_extras, require_type
from airflow_provider_duckling.access.credentials import assume_duckling_role
from airflow_provider_duckling.access.extensions import ALL, LOCAL, connect_duckdb, prefetch
from airflow_provider_duckling.access.lake_metadata import (
    CatalogFacts,
    CatalogUnreadable,
    CatalogVersionRefused,
    read_embedded,
    read_postgres,
    version_refusal,
)
from airflow_provider_duckling.access.storage import DucklingStorage
from airflow_provider_duckling.common.errors import (
    CatalogVersionError,
    ConfigurationError,
    LakeUnavailableError,
)
from airflow_provider_duckling.common.quoting import duckdb_literal, duckdb_str
from airflow_provider_duckling.common.redaction import register_secret, scrub, scrubbed_message
from airflow_provider_duckling.common.retry import retry_conflicts
from airflow_provider_duckling.registry.catalog import DEFAULT_CATALOG_CONN_ID, Duckling
from airflow_provider_duckling.registry.settings import clickhouse_s3_collection, export_identity

LAKE_ALIAS = "lake"
#: Key of the owner mark a duckling's catalog gets on first use (in DuckLake's own metadata table).
OWNER_KEY = "airflow_provider_duckling.team_id"
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# How DuckDB 1.5.5's ducklake extension refuses a catalog of another format on ATTACH (nothing is written).
_VERSION_MISMATCH = re.compile(r"DuckLake catalog version mismatch: catalog version is (\S{1,64}), but")


def create_secret(con: duckdb.DuckDBPyConnection, name: str, kind: str, options: dict[str, Any]) -> None:
    """``CREATE OR REPLACE SECRET name (TYPE kind, …)``: the values as quoted literals (see
    :mod:`~airflow_provider_duckling.common.quoting`), in a statement that is never logged and whose error never
    repeats it: only the error's type and its scrubbed first line leave this function.

    ``name`` and ``kind`` are this module's constants; the option names are DuckDB's keywords."""
    values = ", ".join(f"{option} {duckdb_literal(value)}" for option, value in options.items())
    try:
        con.execute(f"CREATE OR REPLACE SECRET {name} (TYPE {kind}, {values})")
    except duckdb.Error as exc:
        raise LakeUnavailableError(f"cannot create the {name} secret: {scrubbed_message(exc)}") from None


@dataclass(frozen=True)
class LakeSettings:
    """What the ``ducklake`` connection says about reaching lakes."""

    conn_id: str
    login: str | None
    password: str | None
    port: int | None
    aws_conn_id: str
    s3_endpoint_url: str | None
    local_root: Path | None
    sslmode: str
    host: str | None = None
    console_url: str | None = None

    @property
    def extensions(self) -> tuple[str, ...]:
        """The DuckDB extensions a lake reached this way needs."""
        return LOCAL if self.local_root is not None else ALL


class DuckLakeHook(BaseHook):
    """
    Attach DuckDB to a duckling's DuckLake (PostgreSQL catalog + S3 data, or the embedded local variant).

    :param ducklake_conn_id: Airflow connection of type ``ducklake``; the registry entry's
        ``catalog_conn_id`` is used when this is left as ``None``.
    """

    conn_name_attr = "ducklake_conn_id"
    default_conn_name = DEFAULT_CATALOG_CONN_ID
    conn_type = "ducklake"
    hook_name = "DuckLake"

    def __init__(self, ducklake_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ducklake_conn_id = ducklake_conn_id

    def settings(self, duckling: Duckling | None = None) -> LakeSettings:
        """Read the connection that applies to ``duckling`` (registry ``catalog_conn_id`` by default).

        :param duckling: the registry entry; ``None`` reads this hook's (or the default) connection.
        :raises ConfigurationError: the connection is missing or a field is invalid.
        """
        conn_id = self.ducklake_conn_id or (duckling.catalog_conn_id if duckling else self.default_conn_name)
        try:
            conn = self.get_connection(conn_id)
        except Exception:
            raise ConfigurationError(
                f"DuckLake connection {conn_id!r} is not defined "
                f"(create it in Admin → Connections, or set AIRFLOW_CONN_{conn_id.upper()})"
            ) from None
        require_type(conn, conn_id, self.conn_type, "a duckling's catalog_conn_id (and ducklake_conn_id)")
        extra = connection_extras(conn, self.conn_type)
        register_secret(conn.password)
        endpoint = extra.get("s3_endpoint_url") or None
        if endpoint and urlparse(endpoint).scheme not in ("http", "https"):
            raise ConfigurationError(f"DuckLake connection {conn_id!r}: s3_endpoint_url must be http(s)://host[:port]")
        local_root = extra.get("local_root")
        sslmode = str(extra.get("sslmode") or "prefer")
        if sslmode not in _SSLMODES:
            raise ConfigurationError(f"DuckLake connection {conn_id!r}: sslmode must be one of {', '.join(_SSLMODES)}")
        return LakeSettings(
            conn_id=conn_id,
            login=conn.login,
            password=conn.password,
            port=conn.port,
            aws_conn_id=extra.get("aws_conn_id") or "aws_default",
            s3_endpoint_url=endpoint,
            local_root=Path(local_root) if local_root else None,
            sslmode=sslmode,
            host=conn.host or None,
            console_url=extra.get("console_url") or None,
        )

    def storage(
        self, duckling: Duckling, settings: LakeSettings | None = None, *, will_attach: bool = True
    ) -> DucklingStorage:
        """The duckling's data location, with freshly assumed role credentials in S3 mode, and how ClickHouse
        writes to it (the registry entry's ``export_identity``, else ``[duckling] export_identity``).

        :param duckling: the registry entry whose role is assumed.
        :param settings: the connection's settings, if already read.
        :param will_attach: the caller attaches the lake next, so DuckDB's extension files are checked
            in the background while STS answers.
        """
        settings = settings or self.settings(duckling)
        if settings.local_root is not None:
            return DucklingStorage(duckling.bucket, duckling.bucket_region, local_dir=settings.local_root / duckling.bucket)
        if will_attach:
            prefetch(settings.extensions)
        creds = assume_duckling_role(settings.aws_conn_id, duckling)
        own_identity = (duckling.export_identity or export_identity()) == "clickhouse"
        return DucklingStorage(
            duckling.bucket, duckling.bucket_region, creds, endpoint_url=settings.s3_endpoint_url,
            clickhouse_identity=own_identity, clickhouse_collection=clickhouse_s3_collection() if own_identity else None,
        )

    @contextlib.contextmanager
    def attach(
        self, duckling: Duckling, storage: DucklingStorage | None = None, *, read_only: bool = False
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection with the duckling attached as ``lake``; closed on exit.

        The catalog must be this duckling's (data path and owner mark checked; a first use claims it).

        :param duckling: the registry entry to attach.
        :param storage: its storage, if already resolved (else the role is assumed now).
        :param read_only: attach read-only (dry runs): nothing is written, not even a new catalog's tables.
        :raises CatalogVersionError: DuckDB refused the catalog's DuckLake format (nothing was written).
        """
        settings = self.settings(duckling)
        storage = storage or self.storage(duckling, settings)
        con = connect_duckdb(settings.extensions)
        try:
            self._create_s3_secret(con, storage)
            try:
                # Workers attaching a brand-new catalog at once race to create its metadata tables.
                retry_conflicts(
                    f"attach team {duckling.team_id}",
                    lambda: self._attach(con, duckling, settings, storage, read_only),
                    on_error=lambda: con.execute(f"DETACH DATABASE IF EXISTS {LAKE_ALIAS}"),
                    extra_markers=("already exists",),
                )
                self._verify_ownership(con, duckling, storage, claim=not read_only)
            except duckdb.Error as exc:
                mismatch = _VERSION_MISMATCH.search(str(exc))
                if mismatch:
                    raise CatalogVersionError(version_refusal(_whose(duckling), mismatch.group(1))) from None
                if "does not match existing data path" in str(exc):
                    raise ConfigurationError(
                        f"catalog {duckling.db_name} on {duckling.db_host} keeps its data elsewhere, not in team "
                        f"{duckling.team_id}'s {storage.data_path}: it belongs to another duckling; refusing to touch it"
                    ) from None
                raise LakeUnavailableError(
                    f"cannot reach the duckling catalog of team {duckling.team_id}: {scrubbed_message(exc)}"
                ) from None
            yield con
        finally:
            con.close()

    @staticmethod
    def _verify_ownership(con: duckdb.DuckDBPyConnection, duckling: Duckling, storage: DucklingStorage, claim: bool) -> None:
        """Refuse a catalog that belongs to another duckling (see :func:`check_ownership`); a first use
        claims it with this team's owner mark."""
        metadata = f"__ducklake_metadata_{LAKE_ALIAS}"
        rows = dict(con.execute(
            f'SELECT key, value FROM "{metadata}".ducklake_metadata WHERE scope IS NULL '
            f"AND key IN ({duckdb_literal('data_path')}, {duckdb_literal(OWNER_KEY)})"
        ).fetchall())
        owner = check_ownership(rows.get("data_path"), rows.get(OWNER_KEY), duckling, storage)
        if owner is None and claim:
            con.execute(f'INSERT INTO "{metadata}".ducklake_metadata VALUES '
                        f"({duckdb_literal(OWNER_KEY)}, {duckdb_literal(str(duckling.team_id))}, NULL, NULL)")

    def read_catalog(self, duckling: Duckling, storage: DucklingStorage, schema: str, table: str) -> CatalogFacts | None:
        """What the export pre-flight needs, read from the catalog's metadata tables without attaching the
        lake: whether it is initialised, and ``schema.table``'s columns. Ownership is checked as on attach;
        nothing is written (a new catalog is claimed by the first attach).

        :param duckling: the registry entry whose catalog is read.
        :param storage: its storage (the data path the catalog must keep).
        :param schema: the lake schema.
        :param table: the lake table.
        :return: ``None`` when the metadata cannot answer exactly (a nested column type, no version
            recorded): then attach and ask DuckDB.
        :raises CatalogVersionError: the catalog is of another DuckLake format than our DuckDB writes.
        :raises ConfigurationError: the catalog belongs to another duckling or team.
        :raises LakeUnavailableError: the catalog cannot be reached or read.
        """
        settings = self.settings(duckling)
        try:
            if settings.local_root is not None:
                facts = read_embedded(_embedded_catalog(settings.local_root, duckling), schema, table, OWNER_KEY)
            else:
                login = _catalog_login(duckling, settings)
                facts = read_postgres({
                    "host": login["HOST"], "port": login["PORT"], "dbname": login["DATABASE"], "user": login["USER"],
                    "password": login["PASSWORD"], "sslmode": settings.sslmode, "connect_timeout": 10,
                }, schema, table, OWNER_KEY)
        except CatalogUnreadable as exc:  # its message is already one scrubbed line
            raise LakeUnavailableError(f"cannot reach the duckling catalog of team {duckling.team_id}: {exc}") from None
        except CatalogVersionRefused as exc:
            raise CatalogVersionError(version_refusal(_whose(duckling), exc.version)) from None
        if facts is not None and facts.initialised:
            check_ownership(facts.data_path, facts.owner, duckling, storage)
        return facts

    @staticmethod
    def _create_s3_secret(con: duckdb.DuckDBPyConnection, storage: DucklingStorage) -> None:
        if storage.is_local or storage.credentials is None:
            return
        creds = storage.credentials
        options = {
            "KEY_ID": creds.key_id,
            "SECRET": creds.secret,
            "REGION": storage.region,
            "SCOPE": f"s3://{storage.bucket}",
        }
        if creds.session_token:
            options["SESSION_TOKEN"] = creds.session_token
        if storage.endpoint_url:
            parsed = urlparse(storage.endpoint_url)
            options.update(ENDPOINT=parsed.netloc, URL_STYLE="path", USE_SSL=parsed.scheme == "https")
        create_secret(con, "duckling_s3", "S3", options)

    @staticmethod
    def _attach(
        con: duckdb.DuckDBPyConnection, duckling: Duckling, settings: LakeSettings, storage: DucklingStorage,
        read_only: bool = False,
    ) -> None:
        data_path = duckdb_str(storage.data_path)
        mode = ", READ_ONLY" if read_only else ""
        if settings.local_root is not None:
            if not read_only:
                settings.local_root.mkdir(parents=True, exist_ok=True)
            metadata = duckdb_str(f"ducklake:{_embedded_catalog(settings.local_root, duckling)}")
            con.execute(f"ATTACH {metadata} AS {LAKE_ALIAS} (DATA_PATH {data_path}{mode})")
            return
        create_secret(con, "duckling_catalog", "postgres", _catalog_login(duckling, settings))
        # libpq options only; the identifying values all come from the secret above.
        metadata = duckdb_str(f"ducklake:postgres:sslmode={settings.sslmode} connect_timeout=10")
        con.execute(
            f"ATTACH {metadata} AS {LAKE_ALIAS} (DATA_PATH {data_path}, META_SECRET 'duckling_catalog'{mode})"
        )

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test" button: loads the extensions offline, then really reaches what the connection
        names: the embedded lakes directory (writable), or the catalog server (logs in when Host is set)
        and the AWS identity that assumes the duckling roles."""
        try:
            settings = self.settings()
            con = connect_duckdb(settings.extensions)
            try:
                checks = [f"DuckDB {duckdb.__version__} with DuckLake loaded offline"]
                if settings.local_root is not None:
                    checks.append(_check_local_root(settings.local_root))
                else:
                    if settings.host:
                        checks.append(_check_catalog_login(con, settings))
                    checks.append(_check_aws_identity(settings.aws_conn_id))
            finally:
                con.close()
        except Exception as exc:
            return False, scrub(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        return True, "; ".join(checks)


def _whose(duckling: Duckling) -> str:
    """How a message names the duckling's catalog."""
    return f"duckling {duckling.team_id}'s catalog ({duckling.db_name} on {duckling.db_host})"


def _embedded_catalog(local_root: Path, duckling: Duckling) -> Path:
    """The DuckDB file holding an embedded duckling's catalog."""
    return local_root / f"{duckling.db_name}.ducklake"


def _catalog_login(duckling: Duckling, settings: LakeSettings) -> dict[str, Any]:
    """Where and as whom the duckling's PostgreSQL catalog is reached (DuckDB's postgres secret keywords)."""
    return {
        "HOST": duckling.db_host,
        "PORT": duckling.db_port or settings.port or 5432,
        "DATABASE": duckling.db_name,
        "USER": settings.login or "postgres",
        "PASSWORD": settings.password or "",
    }


def check_ownership(data_path: str | None, owner: str | None, duckling: Duckling, storage: DucklingStorage) -> str | None:
    """Refuse a catalog that belongs to another duckling: its stored data path must be this duckling's, and
    its owner mark (written on first use), if any, this team's. Returns the owner mark.

    :raises ConfigurationError: either does not match.
    """
    where = f"catalog {duckling.db_name} on {duckling.db_host}"
    if data_path and data_path.rstrip("/") != storage.data_path.rstrip("/"):
        raise ConfigurationError(
            f"{where} keeps its data in {data_path}, not in team {duckling.team_id}'s "
            f"{storage.data_path}: it belongs to another duckling; refusing to touch it"
        )
    if owner is not None and owner != str(duckling.team_id):
        raise ConfigurationError(f"{where} belongs to team {owner}, not to team {duckling.team_id}; refusing to touch it")
    return owner


def _check_local_root(root: Path) -> str:
    """The embedded lakes directory exists (or can be made) and takes a file."""
    root.mkdir(parents=True, exist_ok=True)
    probe = root / ".duckling-connection-test"
    probe.write_text("ok")
    probe.unlink()
    return f"embedded lakes under {root} (writable)"


def _check_catalog_login(con: duckdb.DuckDBPyConnection, settings: LakeSettings) -> str:
    """Log in to the catalog server named by the connection's Host with its user and password."""
    options = {
        "HOST": settings.host,
        "PORT": settings.port or 5432,
        "DATABASE": "postgres",
        "USER": settings.login or "postgres",
        "PASSWORD": settings.password or "",
    }
    create_secret(con, "duckling_catalog_test", "postgres", options)
    try:
        con.execute(
            f"ATTACH {duckdb_str(f'sslmode={settings.sslmode} connect_timeout=10')} AS catalog_test "
            "(TYPE postgres, SECRET duckling_catalog_test, READ_ONLY)"
        )
        (version,) = con.execute("SELECT * FROM postgres_query('catalog_test', 'SELECT current_setting(''server_version'')')").fetchone()
    except duckdb.Error as exc:
        raise LakeUnavailableError(
            f"cannot log in to the catalog server {settings.host}:{options['PORT']} as {options['USER']}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    return f"catalog login ok as {options['USER']} on {settings.host}:{options['PORT']} (PostgreSQL {version})"


def _check_aws_identity(aws_conn_id: str) -> str:
    """The base AWS identity that assumes duckling roles answers STS."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    try:
        identity = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sts").get_conn().get_caller_identity()
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        raise ConfigurationError(f"AWS connection {aws_conn_id!r} cannot reach STS: {code}") from None
    return f"AWS identity {identity.get('Arn', '?')} via {aws_conn_id}"
