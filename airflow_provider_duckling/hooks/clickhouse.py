"""ClickHouseHook: the export's way to send SQL to ClickHouse, whether it is a server or the embedded engine.

It extends the official provider's hook (``apache-airflow-providers-clickhousedb``), which owns the
``clickhouse`` connection type and its form: the same connection serves the user's own ClickHouse tasks and
our exports, and the client is built from it by the official hook's rules (host, port, login, password,
database, ``secure``, ``verify``, timeouts, ``compress``, ``client_name``, ``session_settings``,
``client_kwargs``). On top, the export needs parameters in the request body, query ids and ``KILL QUERY`` on
kill, error classes a retry policy can read, and the embedded engine: a connection without a host and with
``{"chdb_path": "<dir>"}`` in its extra runs the same SQL in-process on chdb (``[embedded]`` extra), the local
default for demos and tests. Values are always bound as server-side query parameters (``{name:Type}``).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.providers.clickhousedb.hooks.clickhouse import ClickHouseHook as OfficialClickHouseHook

from airflow_provider_duckling.access.connection_extras import connection_extras, require_type
from airflow_provider_duckling.access.workload import Attempt, timeout_advice
from airflow_provider_duckling.common.errors import (
    ConfigurationError,
    DucklingError,
    QueryTimeoutError,
    TransientError,
)
from airflow_provider_duckling.common.redaction import register_secret, scrub

log = logging.getLogger(__name__)

_chdb_lock = threading.Lock()
_chdb_sessions: dict[str, Any] = {}


#: What to do when a connection asks for the embedded engine in an install without it.
EMBEDDED_INSTALL_HINT = "pip install 'airflow-provider-duckling[embedded]'"
#: Client options the export decides whatever the connection says: bound parameters travel in the POST body
#: (the export's S3 session credentials among them), never in the URL that proxies and access logs record;
#: each statement is its own session (query ids, not session ids, identify the export's statements).
EXPORT_CLIENT_OPTIONS = {"form_encode_query_params": True, "autogenerate_session_id": False}
#: Defaults where the connection sets nothing: an export may run for an hour, and LZ4 costs CPU on both ends for
#: statements whose answers are a few rows.
EXPORT_CLIENT_DEFAULTS = {"connect_timeout": 10.0, "send_receive_timeout": 3600.0, "compress": False}


def _chdb_session(path: str) -> Any:
    """The process's chdb session: chdb allows one data path per process, so it is shared."""
    try:
        from chdb import session as chdb_session
    except ImportError:
        raise ConfigurationError(
            f"the ClickHouse connection asks for the embedded engine (extra chdb_path {path!r}, no host) but chdb is "
            f"not installed: {EMBEDDED_INSTALL_HINT}, or give the connection a Host"
        ) from None

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


class ClickHouseCancelledError(ClickHouseError):
    """The task was killed (``on_kill``): no further statement is sent."""


# ClickHouse error codes that a retry cannot change.
_PERMANENT_CODES = {
    6, 27, 36, 43, 47, 53, 60, 62, 70, 72, 81, 115, 158, 164, 192, 194, 195, 396, 497, 516,
}
_CODE = re.compile(r"Code:\s*(\d+)")
#: TIMEOUT_EXCEEDED: ``max_execution_time`` ran out; the same statement would run as long again.
TIMEOUT_EXCEEDED = 159
#: How long the statements a hook sends beside the running one (the probe, ``KILL QUERY``) may take: they
#: must not hold a task that is being killed.
CONTROL_TIMEOUT_SECONDS = 10.0
#: ClickHouse's own SQL for them; the id is bound, never pasted.
KILL_QUERY_SQL = "KILL QUERY WHERE query_id = {query_id:String} SYNC"
RUNNING_QUERY_SQL = "SELECT elapsed FROM system.processes WHERE query_id = {query_id:String}"


_S3_DENIED = re.compile(r"Access ?Denied|HTTP response code: 403", re.I)
_S3_EXPIRED = re.compile(r"Expired|RequestTimeTooSkewed", re.I)


def _classified(message: str, what: str = "the statement") -> DucklingError:
    match = _CODE.search(message)
    code = int(match.group(1)) if match else None
    if code == TIMEOUT_EXCEEDED:
        return QueryTimeoutError(f"ClickHouse stopped {what} at its max_execution_time ({message}); "
                                 + timeout_advice("it"))
    if code in _PERMANENT_CODES:
        return ClickHouseQueryError(message)
    if code == 499 and _S3_DENIED.search(message) and not _S3_EXPIRED.search(message):
        # S3 refused who ClickHouse wrote as (an expired session is the retryable exception)
        return ClickHouseQueryError(
            f"{message} — S3 refused ClickHouse's request: with export_identity = clickhouse the bucket policy must "
            "grant ClickHouse's identity s3:PutObject, s3:GetObject and s3:ListBucket on the bucket; with "
            "assumed_role the duckling role's policy must"
        )
    return ClickHouseError(message)


def _is_read_timeout(exc: BaseException) -> bool:
    """Whether the HTTP client gave up waiting for the answer (its ``send_receive_timeout``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in ("ReadTimeoutError", "ReadTimeout") or isinstance(current, TimeoutError):
            return True
        current = current.__cause__ or current.__context__
    return "read timed out" in str(exc).lower()


class ClickHouseHook(OfficialClickHouseHook):
    """
    Run the export's SQL on ClickHouse over HTTP (clickhouse-connect) or in-process (chdb).

    :param clickhouse_conn_id: Airflow connection of type ``clickhouse`` (the official provider's). The
        client is the official hook's (:meth:`_get_client_kwargs`), with parameters sent in the request body,
        no session id, and defaults of 10 s to connect, 3600 s per statement and no compression where the
        connection sets none. Extra ``chdb_path`` (with no host) selects the embedded engine instead.
    :param attempt: the export attempt the statements belong to: each then carries a ``query_id`` unique to
        the attempt and statement and a ``log_comment`` naming team, table, day and run
        (:mod:`~airflow_provider_duckling.access.workload`), and :meth:`cancel` can kill the running one. Over
        HTTP only: the embedded engine has no query ids to set.
    """

    hook_name = "ClickHouse (duckling export)"

    def __init__(self, clickhouse_conn_id: str = OfficialClickHouseHook.default_conn_name,
                 attempt: Attempt | None = None, **kwargs: Any) -> None:
        self._database: str | None = None  # before the base class sets ``database`` (None: the connection's)
        super().__init__(clickhouse_conn_id=clickhouse_conn_id, **kwargs)
        self.attempt = attempt
        self._client: Any = None
        self._client_options: dict[str, Any] = {}
        self._sequence = itertools.count(1)
        self._state = threading.Lock()
        self._running: str | None = None  # the query id of the statement ClickHouse may still be running
        self._cancelled = False
        self._step = threading.local()  # the step each thread's statements belong to (see step())
        self._chdb_path: str | None = None
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
        self._database = self._database or conn.schema or extra.get("database") or "default"
        if conn.password:
            register_secret(conn.password)
        if not conn.host and extra.get("chdb_path"):
            self._chdb_path = str(extra["chdb_path"])
            _chdb_session(self._chdb_path)  # an install without chdb fails here, in one line
        else:
            import clickhouse_connect

            self._client_options = self._export_client_options(conn, extra)
            self._address = (self._client_options["host"], self._client_options["port"])
            try:
                self._client = clickhouse_connect.get_client(**self._client_options)
            except Exception as exc:
                raise ClickHouseError(scrub(f"cannot connect to ClickHouse ({self.clickhouse_conn_id}): {exc}")) from None
        self._configured = True

    def _export_client_options(self, conn: Any, extra: dict[str, Any]) -> dict[str, Any]:
        """The official hook's client options for this connection, with the export's own on top."""
        options = {**EXPORT_CLIENT_DEFAULTS, **self._get_client_kwargs(), **EXPORT_CLIENT_OPTIONS}
        # ``extra`` also holds the fields older forms stored as ``extra__clickhouse__<name>``, which the official
        # hook does not read; and a URI or an environment variable gives text, where "false" must be false.
        options.update({name: extra[name] for name in ("connect_timeout", "send_receive_timeout") if name in extra})
        options["compress"] = _flag(extra.get("compress"), bool(EXPORT_CLIENT_DEFAULTS["compress"]))
        options["secure"] = _flag(extra.get("secure"), False)
        options["verify"] = _flag(extra.get("verify"), True)
        options["port"] = int(conn.port) if conn.port else (8443 if options["secure"] else 8123)
        # Our statements name their database; the client keeps the user's default one, so that a database that
        # does not exist yet (the demo creates it) or one the user may only read still lets the client connect.
        options.pop("database", None)
        for name in ("connect_timeout", "send_receive_timeout"):
            options[name] = float(options[name])
        return options

    @property
    def database(self) -> str:
        """The database holding the source tables: the hook's ``database`` argument, else the connection's
        schema."""
        if self._database is None:
            self._configure()
        return str(self._database)

    @database.setter
    def database(self, value: str | None) -> None:
        """The official hook's ``database`` argument: overrides the connection's schema."""
        self._database = value

    @property
    def address(self) -> tuple[str | None, int | None]:
        """``(host, port)`` of the server; ``(None, None)`` for the embedded engine."""
        self._configure()
        return self._address

    @property
    def is_embedded(self) -> bool:
        self._configure()
        return self._chdb_path is not None

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Name what the statements sent by this thread inside the block do (``count``, ``export`` …): the name
        ends their query id and is the ``step`` of their ``log_comment``."""
        previous = getattr(self._step, "name", None)
        self._step.name = name
        try:
            yield
        finally:
            self._step.name = previous

    def execute(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement that returns no rows (DDL, ``INSERT INTO FUNCTION …``).

        :param sql: the statement, with ``{name:Type}`` placeholders for values.
        :param parameters: the placeholders' values, bound server-side (never pasted into ``sql``).
        :raises ClickHouseQueryError: ClickHouse refused the statement itself (not retried).
        :raises QueryTimeoutError: ClickHouse ran out of time for it (not retried; the message says what to raise).
        :raises ClickHouseError: anything a retry may cure (network, memory, a server that stopped answering).
        """
        self._run(getattr(self._step, "name", None) or "statement", sql, parameters, rows=False)

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return its rows as tuples.

        :param sql: the query, with ``{name:Type}`` placeholders for values.
        :param parameters: the placeholders' values, bound server-side.
        """
        return self._run(getattr(self._step, "name", None) or "query", sql, parameters, rows=True)

    def _run(self, step: str, sql: str, parameters: dict[str, Any] | None, rows: bool) -> Any:
        self._configure()
        query_id, settings = self._begin(step)
        what = f"the {step} of {self.attempt.partition} ({self.attempt.table})" if self.attempt else f"the {step}"
        try:
            if self._chdb_path is not None:
                session = _chdb_session(self._chdb_path)
                if not rows:
                    session.query(sql, "TabSeparated", params=_as_strings(parameters))
                    result: Any = None
                else:
                    table = session.query(sql, "ArrowTable", params=_as_strings(parameters))
                    columns = [c.to_pylist() for c in table.columns]
                    result = list(zip(*columns, strict=True)) if columns else []
            elif not rows:
                # raw_query, not command: clickhouse-connect's command() puts bound parameters in the URL
                # whatever form_encode_query_params says; raw_query sends them in the POST body.
                self._client.raw_query(sql, parameters=_as_strings(parameters), settings=settings)
                result = None
            else:
                answer = self._client.query(sql, parameters=_as_strings(parameters), settings=settings)
                result = [tuple(r) for r in answer.result_rows]
        except Exception as exc:  # Airflow's execution timeout is a BaseException: it passes, on_kill follows
            if query_id is not None and _is_read_timeout(exc):
                raise self._after_read_timeout(query_id, what) from None
            self._finish(query_id)
            raise _classified(scrub(_first_lines(exc)), what) from None
        self._finish(query_id)
        return result

    def _begin(self, step: str) -> tuple[str | None, dict[str, str]]:
        """The statement's query id and settings; refused once the task was cancelled."""
        with self._state:
            if self._cancelled:
                raise ClickHouseCancelledError(f"the task was killed: the {step} was not sent to ClickHouse")
            if self.attempt is None or self._chdb_path is not None:
                return None, {}
            query_id = self.attempt.query_id(next(self._sequence), step)
            self._running = query_id
            return query_id, {"query_id": query_id, "log_comment": self.attempt.log_comment(step)}

    def _finish(self, query_id: str | None) -> None:
        with self._state:
            if query_id is not None and self._running == query_id:
                self._running = None

    @property
    def running_query_id(self) -> str | None:
        """The query id of the statement ClickHouse may be running for this hook (``None``: none)."""
        with self._state:
            return self._running

    def cancel(self) -> str | None:
        """Stop this hook's work: no statement is sent any more, and the one ClickHouse may be running is
        killed (``KILL QUERY WHERE query_id = … SYNC`` through a new client, bounded by
        :data:`CONTROL_TIMEOUT_SECONDS`). Never raises: it runs in ``on_kill``. Returns the killed query id."""
        with self._state:
            self._cancelled = True
            query_id = self._running
        if query_id is None or not self._client_options:
            return None
        try:
            self.kill_query(query_id)
        except Exception as exc:  # noqa: BLE001 - on_kill must not raise
            log.warning("event=clickhouse_kill_failed query_id=%s reason=%s", query_id, scrub(_first_lines(exc)))
            return None
        self._finish(query_id)
        return query_id

    def kill_query(self, query_id: str) -> int:
        """``KILL QUERY WHERE query_id = {query_id:String} SYNC`` through a new client (the hook's own may be
        waiting for that very query); returns how many queries ClickHouse listed as killed."""
        client = self._control_client()
        try:
            return len(client.query(KILL_QUERY_SQL, parameters={"query_id": query_id}).result_rows)
        finally:
            client.close()

    def _control_client(self) -> Any:
        """A new client with short timeouts, for statements sent beside a running one."""
        import clickhouse_connect

        options = dict(self._client_options)
        options["connect_timeout"] = min(float(options["connect_timeout"]), CONTROL_TIMEOUT_SECONDS)
        options["send_receive_timeout"] = CONTROL_TIMEOUT_SECONDS
        return clickhouse_connect.get_client(**{**options, "query_retries": 0})

    def _after_read_timeout(self, query_id: str, what: str) -> DucklingError:
        """The HTTP client stopped waiting for ``query_id``. A statement that was still running for most of
        that time takes too long: it is killed (ClickHouse would finish it for nobody) and the attempt fails
        with advice. A server that does not answer, or had not been running the statement, is a transient
        fault: retried."""
        timeout = float(self._client_options["send_receive_timeout"])
        try:
            client = self._control_client()
            try:
                found = client.query(RUNNING_QUERY_SQL, parameters={"query_id": query_id}).result_rows
                elapsed = float(found[0][0]) if found else None
                if found:
                    client.query(KILL_QUERY_SQL, parameters={"query_id": query_id})
            finally:
                client.close()
        except Exception:
            return ClickHouseError(
                f"ClickHouse did not answer {what} within {timeout:g} s (the connection's send_receive_timeout) "
                "and does not answer now"
            )
        self._finish(query_id)
        if elapsed is not None and elapsed >= timeout / 2:
            log.warning("event=clickhouse_query_killed query_id=%s reason=read_timeout elapsed=%.1fs", query_id, elapsed)
            return QueryTimeoutError(
                f"ClickHouse had been running {what} for {elapsed:.0f} s when the client stopped waiting "
                f"(the clickhouse connection's send_receive_timeout, {timeout:g} s); the query was killed. "
                + timeout_advice("It")
            )
        return ClickHouseError(
            f"ClickHouse did not answer {what} within {timeout:g} s (the connection's send_receive_timeout), "
            "and was not running it for most of that time: the server was busy or unreachable"
        )

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's "Test" button: really runs ``SELECT version()``."""
        try:
            (version,) = self.query_rows("SELECT version()")[0]
        except Exception as exc:
            return False, scrub(str(exc))
        return True, f"Connected to ClickHouse {version}"


def _flag(value: Any, default: bool) -> bool:
    """A boolean extra, whether the form stored a JSON boolean or a URI gave text."""
    if value is None:
        return default
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _as_strings(parameters: dict[str, Any] | None) -> dict[str, str] | None:
    """Parameter values as ClickHouse parses them from text (dates as ISO strings)."""
    if not parameters:
        return None
    return {k: v.isoformat() if hasattr(v, "isoformat") else str(v) for k, v in parameters.items()}


def _first_lines(exc: BaseException, limit: int = 3) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()][:limit]
    return " ".join(lines)[:2000] or type(exc).__name__
