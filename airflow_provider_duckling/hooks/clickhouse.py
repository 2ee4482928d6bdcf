"""ClickHouseHook: one way to send SQL to ClickHouse, whether it is a server or the embedded engine.

A ``clickhouse`` connection with a host talks to a ClickHouse server over its HTTP interface with
clickhouse-connect. A connection without a host and with ``{"chdb_path": "<dir>"}`` in its extra runs the
same SQL in-process on chdb (the ClickHouse engine as a library): the local default for demos and tests.
Values are always bound as server-side query parameters (``{name:Type}`` placeholders).
"""

from __future__ import annotations

import atexit
import re
import threading
from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_duckling.errors import ConfigurationError, TransientError
from airflow_provider_duckling.hooks.extras import connection_extras, require_type
from airflow_provider_duckling.redaction import register_secret, scrub

_chdb_lock = threading.Lock()
_chdb_sessions: dict[str, Any] = {}


def _chdb_session(path: str) -> Any:
    """The process's chdb session: chdb allows one data path per process, so it is shared."""
    from chdb import session as chdb_session

    with _chdb_lock:
        if path not in _chdb_sessions:
            if _chdb_sessions:
                other = next(iter(_chdb_sessions))
                raise ConfigurationError(
                    f"embedded chdb is already open on {other!r} in this process; one data path per process"
                )
            _chdb_sessions[path] = chdb_session.Session(path)
        return _chdb_sessions[path]


@atexit.register
def _close_chdb_sessions() -> None:
    """Close embedded sessions before the interpreter tears chdb down (avoids noise at exit)."""
    with _chdb_lock:
        for session in _chdb_sessions.values():
            try:
                session.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        _chdb_sessions.clear()


class ClickHouseError(TransientError):
    """ClickHouse failed a statement for a reason a retry may cure (timeout, memory, network, server
    restart); the message is scrubbed of secrets."""


class ClickHouseQueryError(ConfigurationError):
    """ClickHouse refused the statement itself (unknown setting, bad value, limit hit, access denied):
    the same statement fails the same way, so it is not retried."""


# ClickHouse error codes that a retry cannot change.
_PERMANENT_CODES = {
    6, 27, 36, 43, 47, 53, 60, 62, 70, 72, 81, 115, 158, 164, 192, 194, 195, 396, 497, 516,
}
_CODE = re.compile(r"Code:\s*(\d+)")


def _classified(message: str) -> ClickHouseError | ClickHouseQueryError:
    match = _CODE.search(message)
    if match and int(match.group(1)) in _PERMANENT_CODES:
        return ClickHouseQueryError(message)
    return ClickHouseError(message)


class ClickHouseHook(BaseHook):
    """
    Run SQL on ClickHouse over HTTP (clickhouse-connect) or in-process (chdb).

    :param clickhouse_conn_id: Airflow connection of type ``clickhouse``. Host/port/login/password/schema
        address a server; extra ``chdb_path`` (with no host) selects the embedded engine; extra
        ``secure`` switches to HTTPS; extra ``connect_timeout`` / ``send_receive_timeout`` in seconds.
    """

    conn_name_attr = "clickhouse_conn_id"
    default_conn_name = "clickhouse_default"
    conn_type = "clickhouse"
    hook_name = "ClickHouse"

    def __init__(self, clickhouse_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clickhouse_conn_id = clickhouse_conn_id
        self._client: Any = None
        self._chdb_path: str | None = None
        self._database = "default"
        self._address: tuple[str | None, int | None] = (None, None)
        self._configured = False

    def prepare(self) -> None:
        """Read the connection and open the client now (once): before the hook is used from another thread."""
        self._configure()

    def _configure(self) -> None:
        if self._configured:
            return
        try:
            conn = self.get_connection(self.clickhouse_conn_id)
        except Exception:
            raise ConfigurationError(
                f"ClickHouse connection {self.clickhouse_conn_id!r} is not defined "
                "(create it in Admin → Connections, or set AIRFLOW_CONN_" + self.clickhouse_conn_id.upper() + ")"
            ) from None
        require_type(conn, self.clickhouse_conn_id, self.conn_type, "clickhouse_conn_id")
        extra = connection_extras(conn, self.conn_type)
        self._database = conn.schema or extra.get("database") or "default"
        if conn.password:
            register_secret(conn.password)
        if not conn.host:
            if not extra.get("chdb_path"):
                raise ConfigurationError(
                    f"ClickHouse connection {self.clickhouse_conn_id!r} has neither a host nor extra.chdb_path"
                )
            self._chdb_path = str(extra["chdb_path"])
        else:
            import clickhouse_connect

            secure = str(extra.get("secure", "false")).lower() in ("1", "true", "yes")
            self._address = (conn.host, conn.port or (8443 if secure else 8123))
            try:
                self._client = clickhouse_connect.get_client(
                    host=conn.host,
                    port=conn.port or (8443 if secure else 8123),
                    username=conn.login or "default",
                    password=conn.password or "",
                    secure=secure,
                    compress=False,
                    connect_timeout=float(extra.get("connect_timeout", 10)),
                    send_receive_timeout=float(extra.get("send_receive_timeout", 3600)),
                    autogenerate_session_id=False,
                    # Bound parameters (the export's S3 session credentials among them) travel in the POST body,
                    # never in the request URL that proxies, load balancers and access logs record.
                    form_encode_query_params=True,
                )
            except Exception as exc:
                raise ClickHouseError(scrub(f"cannot connect to ClickHouse ({self.clickhouse_conn_id}): {exc}")) from None
        self._configured = True

    @property
    def database(self) -> str:
        """The database holding the source tables (the connection's schema)."""
        self._configure()
        return self._database

    @property
    def address(self) -> tuple[str | None, int | None]:
        """``(host, port)`` of the server; ``(None, None)`` for the embedded engine."""
        self._configure()
        return self._address

    @property
    def is_embedded(self) -> bool:
        self._configure()
        return self._chdb_path is not None

    def execute(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement that returns no rows (DDL, ``INSERT INTO FUNCTION …``).

        :param sql: the statement, with ``{name:Type}`` placeholders for values.
        :param parameters: the placeholders' values, bound server-side (never pasted into ``sql``).
        :raises ClickHouseQueryError: ClickHouse refused the statement itself (not retried).
        :raises ClickHouseError: anything a retry may cure (timeout, network, memory).
        """
        self._configure()
        try:
            if self._chdb_path is not None:
                _chdb_session(self._chdb_path).query(sql, "TabSeparated", params=_as_strings(parameters))
            else:
                # raw_query, not command: clickhouse-connect's command() puts bound parameters in the URL
                # whatever form_encode_query_params says; raw_query sends them in the POST body.
                self._client.raw_query(sql, parameters=_as_strings(parameters))
        except Exception as exc:
            raise _classified(scrub(_first_lines(exc))) from None

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return its rows as tuples.

        :param sql: the query, with ``{name:Type}`` placeholders for values.
        :param parameters: the placeholders' values, bound server-side.
        """
        self._configure()
        try:
            if self._chdb_path is not None:
                table = _chdb_session(self._chdb_path).query(sql, "ArrowTable", params=_as_strings(parameters))
                columns = [c.to_pylist() for c in table.columns]
                return list(zip(*columns, strict=True)) if columns else []
            return [tuple(r) for r in self._client.query(sql, parameters=_as_strings(parameters)).result_rows]
        except Exception as exc:
            raise _classified(scrub(_first_lines(exc))) from None

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's "Test" button: really runs ``SELECT version()``."""
        try:
            (version,) = self.query_rows("SELECT version()")[0]
        except Exception as exc:
            return False, scrub(str(exc))
        return True, f"Connected to ClickHouse {version}"


def _as_strings(parameters: dict[str, Any] | None) -> dict[str, str] | None:
    """Parameter values as ClickHouse parses them from text (dates as ISO strings)."""
    if not parameters:
        return None
    return {k: v.isoformat() if hasattr(v, "isoformat") else str(v) for k, v in parameters.items()}


def _first_lines(exc: BaseException, limit: int = 3) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()][:limit]
    return " ".join(lines)[:2000] or type(exc).__name__
