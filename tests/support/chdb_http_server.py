"""A small ClickHouse HTTP interface over the in-process chdb engine, for tests.

Run it as its own process (chdb allows one data path per process)::

    python -m tests.support.chdb_http_server --port 0 --data-path DIR [--password PW]

It prints ``READY <port>`` once it serves.  From pytest use :func:`start_chdb_http_server`.

What it speaks (enough for clickhouse-connect's ``get_client``, ``query``, ``command`` and ``insert``):

* ``GET /ping`` and ``GET /`` without a query answer ``Ok.``.
* ``GET``/``POST /``: the SQL is the ``query`` URL parameter, then a newline, then the body (as ClickHouse
  does).  ``INSERT ... FORMAT <fmt>`` followed by data is streamed into chdb with ``send_insert``; the body may
  be compressed (``Content-Encoding`` gzip, deflate, lz4, zstd) and chunked.  Multipart forms carry ``query``
  and ``param_*`` fields; external-data files are not supported.
* ``database``, ``default_format``, ``query_id`` and ``param_<name>`` (bound through chdb's ``params``) are
  honoured; every other URL parameter not listed in :data:`NON_SETTING_PARAMS` is a ClickHouse setting,
  ``SET`` for that request and reset to ``DEFAULT`` after it.
* Responses are gzip-compressed when ``enable_http_compression=1`` and the client accepts gzip.
* Errors answer HTTP 500 with ``Code: N. DB::Exception: ...`` and ``X-ClickHouse-Exception-Code``.

Not like a real server: one chdb session serves every request (serialised by a lock), so ``session_id`` is
ignored, temporary tables are shared, and a ``SET`` *statement* sent as a query stays in force for later
requests.

Workload control (chdb has ``system.processes`` and ``KILL QUERY`` but assigns its own query ids and has no
``system.query_log``):

* A request's ``query_id`` is the id ``system.processes`` shows: the server tags the running statement with
  the setting ``query_cache_tag = 'chdb_http_server:<query_id>'`` (so a client's own ``query_cache_tag`` is
  not kept) and answers every query that reads ``system.processes`` from a view mapping chdb's id back to
  the client's (chdb's own id is the extra column ``engine_query_id``).
* Statements that read ``system.processes`` and ``KILL QUERY WHERE …`` run on a second chdb session,
  outside the lock, so they answer while a long statement runs, as on a server. ``KILL QUERY`` selects
  the queries with its ``WHERE`` over that view and kills them by chdb's ids (``SYNC`` waits); its answer
  lists them (``kill_status``, ``query_id``, ``user``, ``query``). The killed statement's client gets
  ``Code: 394 … QUERY_WAS_CANCELLED``.
* Opt-in ``--query-log`` (``start_chdb_http_server(..., query_log=True)``): one row per finished request
  in ``chdb_http_server.query_log``, which is what ``system.query_log`` names in any query:
  ``event_time``, ``type`` (``QueryFinish`` or ``ExceptionWhileProcessing``; no ``QueryStart`` rows),
  ``query_id`` (the client's, else a generated one), ``query`` (as sent, placeholders unbound),
  ``log_comment`` (from the request's settings; a ``SETTINGS log_comment`` clause inside the SQL is not
  seen), ``Settings`` (the request's settings), ``exception_code``, ``query_duration_ms``. Rows are written
  before the answer is sent, so no ``SYSTEM FLUSH LOGS`` is needed (it is answered, and does nothing).
* A client that disconnects does not cancel its statement (like ClickHouse for anything but read-only
  queries with ``cancel_http_readonly_queries_on_client_close``): cancel with ``KILL QUERY``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hmac
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
PASSWORD_ENV = "CHDB_HTTP_SERVER_PASSWORD"
DISPLAY_NAME = "chdb-http-server"

#: URL parameters that are part of the HTTP protocol (or HTTP-only settings), never applied with ``SET``.
NON_SETTING_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "quota_key",
        "compress",
        "decompress",
        "user",
        "password",
        "role",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
        "http_response_buffer_size",
        "http_wait_end_of_query",
        "add_http_cors_header",
    }
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INSERT_WITH_DATA = re.compile(
    rb"\A\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n)?", re.I | re.S
)
_NOT_DATA_INSERT = re.compile(r"\b(SELECT|VALUES|WITH)\b", re.I)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*\Z", re.I)
_ERROR_CODE = re.compile(r"^Code:\s*(\d+)\.")
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/|\()*", re.S)
_RESULT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "CHECK", "FROM", "VALUES"}
)
_BINARY_FORMATS = ("Native", "RowBinary", "Parquet", "Arrow", "ArrowStream", "ORC", "Avro", "Protobuf")
_PROCESSES = re.compile(r"\bsystem\s*\.\s*processes\b", re.I)
_QUERY_LOG = re.compile(r"\bsystem\s*\.\s*query_log\b", re.I)
_KILL_QUERY = re.compile(
    r"\A\s*KILL\s+QUERY\s+WHERE\s+(?P<where>.*?)\s*(?P<mode>\bSYNC|\bASYNC|\bTEST)?\s*"
    r"(?:\bFORMAT\s+(?P<fmt>[A-Za-z0-9_]+))?\s*;?\s*\Z",
    re.I | re.S,
)
_FLUSH_LOGS = re.compile(r"\A\s*SYSTEM\s+FLUSH\s+LOGS\b[^;]*;?\s*\Z", re.I)
#: What tags a running statement with its client's query id (see the module docstring).
TAG_SETTING = "query_cache_tag"
TAG_PREFIX = "chdb_http_server:"
#: ``system.processes`` as a client sees it: chdb's query id replaced by the client's, chdb's kept aside.
PROCESSES_VIEW = (
    "(SELECT * REPLACE (if(startsWith(p.Settings['query_cache_tag'], 'chdb_http_server:'), "
    "substring(p.Settings['query_cache_tag'], 18), p.query_id) AS query_id), p.query_id AS engine_query_id "
    "FROM system.processes AS p)"
)
QUERY_LOG_TABLE = "chdb_http_server.query_log"


class ClickHouseError(Exception):
    """An error answered ClickHouse-style: numeric code, message, HTTP status."""

    def __init__(self, code: int, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @classmethod
    def from_exception(cls, exc: BaseException) -> ClickHouseError:
        """Wrap an engine (or any) exception, keeping ClickHouse's own ``Code: N.`` when present."""
        if isinstance(exc, ClickHouseError):
            return exc
        text = str(exc).strip()
        match = _ERROR_CODE.match(text)
        if match:
            return cls(int(match.group(1)), text)
        return cls(1, f"Code: 1. DB::Exception: {text or type(exc).__name__}")


@dataclass
class Reply:
    """The outcome of one query: body, output format (None: no result set) and X-ClickHouse-Summary fields."""

    body: bytes
    fmt: str | None
    summary: dict[str, str] = field(default_factory=dict)


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _summary(**values: float) -> dict[str, str]:
    keys = (
        "read_rows",
        "read_bytes",
        "written_rows",
        "written_bytes",
        "total_rows_to_read",
        "result_rows",
        "result_bytes",
        "elapsed_ns",
    )
    return {key: str(int(values.get(key, 0))) for key in keys}


class ChdbEngine:
    """One chdb session for the process; queries are serialised with a lock. A second session answers what a
    server answers while a statement runs (``system.processes``, ``KILL QUERY``), outside that lock."""

    def __init__(self, data_path: Path, query_log: bool = False) -> None:
        from chdb import session  # heavy: imported only in the server process

        self._session = session.Session(str(data_path))
        self._control = session.Session(str(data_path))
        self._lock = threading.Lock()
        self._control_lock = threading.Lock()
        self.version = self._text("SELECT version()")
        self.timezone = self._text("SELECT timezone()")
        self.query_log = query_log
        if query_log:
            self._control.query("CREATE DATABASE IF NOT EXISTS chdb_http_server")
            self._control.query(
                f"CREATE TABLE IF NOT EXISTS {QUERY_LOG_TABLE} (event_time DateTime64(6, 'UTC'), type String, "
                "query_id String, query String, log_comment String, Settings Map(String, String), "
                "exception_code Int32, query_duration_ms UInt64) ENGINE = MergeTree ORDER BY event_time"
            )

    def _text(self, sql: str) -> str:
        return self._session.query(sql, "TabSeparated").bytes().decode().strip()

    def close(self) -> None:
        """Close the chdb sessions (releases the data path) once no query runs."""
        with self._lock, self._control_lock:
            self._control.close()
            self._session.close()

    def execute(
        self,
        sql: bytes,
        database: str | None,
        settings: Mapping[str, str],
        params: Mapping[str, str],
        default_format: str,
        query_id: str = "",
    ) -> Reply:
        """Run one request's SQL (``INSERT ... FORMAT`` data included) with its database, settings and params;
        ``query_id`` is what ``system.processes`` shows for it."""
        for name in settings:
            if not _IDENT.match(name):
                raise ClickHouseError(
                    115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)", 400
                )
        if self.query_log:
            sql = _QUERY_LOG.sub(QUERY_LOG_TABLE, sql.decode("utf-8", "replace")).encode()
        text = sql.decode("utf-8", "replace")
        if _is_control(text):
            with self._control_lock:
                return self._with_settings(
                    self._control, database, settings, lambda: self._control_statement(text, params, default_format)
                )
        applied = dict(settings)
        if query_id:
            applied[TAG_SETTING] = TAG_PREFIX + query_id
        with self._lock:
            return self._with_settings(self._session, database, applied, lambda: self._run(sql, params, default_format))

    @staticmethod
    def _with_settings(session: Any, database: str | None, settings: Mapping[str, str], run: Any) -> Reply:
        """``run()`` in ``database`` with ``settings`` SET on ``session``, reset after (the caller holds its lock)."""
        session.query(f"USE {_identifier(database or 'default')}")
        try:
            if settings:
                session.query("SET " + ", ".join(f"{k} = {_sql_string(v)}" for k, v in settings.items()))
            return run()
        finally:
            if settings:
                with suppress(Exception):  # fails only for names the SET above rejected
                    session.query("SET " + ", ".join(f"{k} = DEFAULT" for k in settings))

    def _control_statement(self, text: str, params: Mapping[str, str], default_format: str) -> Reply:
        """``KILL QUERY`` over the client-facing ``system.processes``, or a read of system tables."""
        if _FLUSH_LOGS.match(text):
            return Reply(b"", None, _summary())
        bind = dict(params) or None
        kill = _KILL_QUERY.match(text)
        if kill is None:
            return self._reply(self._control, _PROCESSES.sub(PROCESSES_VIEW, text), bind, default_format)
        where = _PROCESSES.sub(PROCESSES_VIEW, kill.group("where"))
        fmt = kill.group("fmt") or default_format
        selected = f"FROM {PROCESSES_VIEW} WHERE {where}"
        engine_ids = [
            line for line in self._control.query(f"SELECT engine_query_id {selected}", "TabSeparated", params=bind)
            .bytes().decode().splitlines() if line
        ]
        listing = f"SELECT 'finished' AS kill_status, query_id, user, query {selected} FORMAT {fmt}"
        reply = self._reply(self._control, listing, bind, fmt)
        mode = (kill.group("mode") or "").upper()
        if engine_ids and mode != "TEST":
            self._control.query(
                f"KILL QUERY WHERE query_id IN {{ids:Array(String)}} {mode}",
                "TabSeparated",
                params={"ids": "[" + ",".join(_sql_string(i) for i in engine_ids) + "]"},
            )
        return reply

    @staticmethod
    def _reply(session: Any, text: str, params: dict[str, str] | None, default_format: str) -> Reply:
        trailing = _TRAILING_FORMAT.search(text)
        fmt = trailing.group(1) if trailing else default_format
        result = session.query(text, fmt, params=params)
        body = bytes(result.bytes())
        return Reply(body, fmt, _summary(result_rows=result.rows_read(), result_bytes=len(body)))

    def log_query(
        self, query_id: str, sql: bytes, settings: Mapping[str, str], error: ClickHouseError | None, started: float
    ) -> None:
        """One ``query_log`` row for a finished request (when the log is on)."""
        if not self.query_log:
            return
        row = {
            "event_time": time.time(),
            "type": "ExceptionWhileProcessing" if error else "QueryFinish",
            "query_id": query_id,
            "query": sql.decode("utf-8", "replace")[:100_000],
            "log_comment": settings.get("log_comment", ""),
            "Settings": dict(settings),
            "exception_code": error.code if error else 0,
            "query_duration_ms": int((time.monotonic() - started) * 1000),
        }
        with self._control_lock:
            inserter = self._control.send_insert(f"INSERT INTO {QUERY_LOG_TABLE}", "JSONEachRow")
            try:
                inserter.append(json.dumps(row) + "\n")
                inserter.finish()
            except BaseException:
                inserter.cancel()
                raise

    def _run(self, sql: bytes, params: Mapping[str, str], default_format: str) -> Reply:
        match = _INSERT_WITH_DATA.match(sql)
        if match and not _NOT_DATA_INSERT.search(match.group(1).decode("utf-8", "replace")):
            statement, fmt = match.group(1).decode(), match.group(2).decode()
            inserter = self._session.send_insert(statement, fmt)
            try:
                data = sql[match.end() :]
                if data:
                    inserter.append(data)
                done = inserter.finish()
            except BaseException:
                inserter.cancel()
                raise
            return Reply(
                b"",
                None,
                _summary(
                    written_rows=done.rows_written,
                    written_bytes=done.bytes_written,
                    elapsed_ns=done.elapsed * 1e9,
                ),
            )
        text = sql.decode("utf-8")
        trailing = _TRAILING_FORMAT.search(text)
        fmt = trailing.group(1) if trailing else default_format
        result = self._session.query(text, fmt, params=dict(params) or None)
        body = bytes(result.bytes())
        keyword = text[_LEADING_NOISE.match(text).end() :].split(None, 1)[:1]  # type: ignore[union-attr]
        return Reply(
            body,
            fmt if body or (keyword and keyword[0].upper() in _RESULT_KEYWORDS) else None,
            _summary(
                read_rows=result.storage_rows_read(),
                read_bytes=result.storage_bytes_read(),
                written_rows=result.rows_written(),
                written_bytes=result.bytes_written(),
                result_rows=result.rows_read(),
                result_bytes=len(body),
                elapsed_ns=result.elapsed() * 1e9,
            ),
        )


_TABLE_REFERENCE = re.compile(r"\b(?:FROM|JOIN)\s+([^\s(),;]+)", re.I)


def _is_control(text: str) -> bool:
    """Whether a statement is answered on the control session, beside a running statement: ``KILL QUERY``,
    ``SYSTEM FLUSH LOGS``, or a ``SELECT`` that reads system tables only (``system.processes``, a client's
    hand-shake: ``SELECT version()``, ``system.settings``)."""
    if _KILL_QUERY.match(text) or _FLUSH_LOGS.match(text):
        return True
    body = text[_LEADING_NOISE.match(text).end() :]  # type: ignore[union-attr]
    if not re.match(r"SELECT\b", body, re.I) or re.search(r"\bINTO\s+OUTFILE\b", body, re.I):
        return False
    return all(t.lower().startswith(("system.", "`system`.")) for t in _TABLE_REFERENCE.findall(body))


def _decode_body(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    if encoding == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        return zstd.decompress(data)
    raise ClickHouseError(1, f"Code: 1. DB::Exception: Unsupported Content-Encoding: {encoding}", 400)


class Handler(BaseHTTPRequestHandler):
    """ClickHouse HTTP interface, as far as clickhouse-connect needs it."""

    server: ChdbHttpServerProcess
    protocol_version = "HTTP/1.1"
    server_version = DISPLAY_NAME
    # Headers and body go out in separate writes: with Nagle's algorithm on, each answer waited for the
    # client's delayed ACK (about 40 ms a request, which a real ClickHouse server does not add).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read stderr only when the server dies."""

    def do_HEAD(self) -> None:
        self._send(200, b"", {"Content-Type": "text/plain; charset=UTF-8"}, head=True)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            body = self._read_body()
            if url.path in ("/ping", "/replicas_status") or (
                url.path == "/" and "query" not in params and not body
            ):
                self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
                return
            if url.path != "/":
                raise ClickHouseError(1, f"Code: 1. DB::Exception: There is no handler {url.path}", 404)
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                params.update(self._form_fields(content_type, body))
                body = b""
            self._authenticate(params)
            self._query(params, body)
        except Exception as exc:  # every failure becomes a ClickHouse error reply
            error = ClickHouseError.from_exception(exc)
            self.close_connection = True  # the request may not have been read completely
            self._send(
                error.status,
                f"{error}\n".encode(),
                # said, so that the client opens a new connection instead of reusing this closed one
                {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(error.code),
                 "Connection": "close"},
            )

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(chunks)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return _decode_body(data, self.headers.get("Content-Encoding", ""))

    @staticmethod
    def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
        message = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        fields: dict[str, str] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                raise ClickHouseError(
                    48, "Code: 48. DB::Exception: External data is not supported by chdb_http_server"
                )
            if isinstance(name, str):
                payload = part.get_payload(decode=True)
                fields[name] = payload.decode() if isinstance(payload, bytes) else str(payload)
        return fields

    def _authenticate(self, params: Mapping[str, str]) -> None:
        expected = self.server.password
        if expected is None:
            return
        user, password = params.get("user", "default"), params.get("password", "")
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except ValueError:  # bad base64 or UTF-8
                user, password = "", ""
        elif "X-ClickHouse-User" in self.headers or "X-ClickHouse-Key" in self.headers:
            user = self.headers.get("X-ClickHouse-User", "default")
            password = self.headers.get("X-ClickHouse-Key", "")
        if user != "default" or not hmac.compare_digest(password.encode(), expected.encode()):
            raise ClickHouseError(
                516,
                f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
                "or there is no user with such name. (AUTHENTICATION_FAILED)",
                401,
            )

    def _query(self, params: Mapping[str, str], body: bytes) -> None:
        sql = body
        if "query" in params:
            sql = params["query"].encode() + (b"\n" + body if body else b"")
        settings = {
            k: v for k, v in params.items() if k not in NON_SETTING_PARAMS and not k.startswith("param_")
        }
        bind = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
        engine = self.server.engine
        query_id = params.get("query_id") or str(uuid.uuid4())
        started = time.monotonic()
        try:
            reply = engine.execute(
                sql,
                params.get("database") or None,
                settings,
                bind,
                params.get("default_format") or "TabSeparated",
                query_id,
            )
        except Exception as exc:
            engine.log_query(query_id, sql, settings, ClickHouseError.from_exception(exc), started)
            raise
        engine.log_query(query_id, sql, settings, None, started)
        binary = reply.fmt in _BINARY_FORMATS
        headers = {
            "Content-Type": "application/octet-stream" if binary else "text/plain; charset=UTF-8",
            "X-ClickHouse-Summary": json.dumps(reply.summary),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": engine.timezone,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
        }
        if reply.fmt:  # like ClickHouse: only statements with a result set name a format
            headers["X-ClickHouse-Format"] = reply.fmt
        payload = reply.body
        accepted = {
            e.split(";")[0].strip().lower() for e in self.headers.get("Accept-Encoding", "").split(",")
        }
        if params.get("enable_http_compression") in ("1", "true") and "gzip" in accepted:
            payload = gzip.compress(payload, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        self._send(200, payload, headers)

    def _send(self, status: int, payload: bytes, headers: Mapping[str, str], head: bool = False) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)


class ChdbHttpServerProcess(ThreadingHTTPServer):
    """The HTTP server of the child process; holds the engine and the optional password."""

    daemon_threads = True

    def __init__(self, port: int, engine: ChdbEngine, password: str | None) -> None:
        super().__init__((HOST, port), Handler)
        self.engine = engine
        self.password = password


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT.  The password comes from ``--password`` or $CHDB_HTTP_SERVER_PASSWORD."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8123, help="0 picks a free port (printed in READY)")
    parser.add_argument("--data-path", type=Path, required=True)
    parser.add_argument("--password", default=os.environ.get(PASSWORD_ENV))
    parser.add_argument("--query-log", action="store_true", help="keep system.query_log (see the module docstring)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TZ", "UTC")  # a server's timezone: UTC unless the caller chose one
    data_path = args.data_path.resolve()
    data_path.mkdir(parents=True, exist_ok=True)
    os.chdir(data_path)  # relative file() paths resolve against the cwd: keep them in the data path
    engine = ChdbEngine(data_path, query_log=args.query_log)
    server = ChdbHttpServerProcess(args.port, engine, args.password or None)

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.close()
    return 0


@dataclass
class ChdbHttpServer:
    """A running server subprocess: ``.port``, ``.url``, ``.process``, ``.stop()``; a context manager."""

    port: int
    process: subprocess.Popen[bytes]
    data_path: Path
    _stderr: IO[bytes]
    host: str = HOST
    _stderr_text: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stderr(self) -> str:
        """What the server wrote to stderr (kept after :meth:`stop`)."""
        if not self._stderr.closed:
            self._stderr.seek(0)
            self._stderr_text = self._stderr.read().decode(errors="replace")
        return self._stderr_text

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (SIGTERM), kill it if it does not exit in time (imported here: the server
        process itself never loads the test services)."""
        from tests.support.services import stop_process

        stop_process(self.process, timeout)
        if self.process.stdout:
            self.process.stdout.close()
        self.stderr()
        self._stderr.close()

    def __enter__(self) -> ChdbHttpServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _lines(stream: IO[bytes], out: queue.Queue[str | None]) -> None:
    for line in iter(stream.readline, b""):
        out.put(line.decode(errors="replace").strip())
    out.put(None)


def start_chdb_http_server(
    data_path: Path, password: str | None = None, *, port: int = 0, timeout: float = 30.0, query_log: bool = False
) -> ChdbHttpServer:
    """Start the server in a subprocess (cwd = repo root) and wait for ``READY``.

    ``port=0`` lets the child bind a free loopback port and report it, which avoids the race of picking a
    port here.  The password travels in the environment, not on the command line.  ``query_log`` keeps
    ``system.query_log`` (see the module docstring).
    """
    data_path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TZ="UTC")
    env.pop(PASSWORD_ENV, None)
    if password is not None:
        env[PASSWORD_ENV] = password
    stderr = tempfile.TemporaryFile()
    cmd = [
        sys.executable,
        "-m",
        "tests.support.chdb_http_server",
        "--port",
        str(port),
        "--data-path",
        str(data_path),
        *(["--query-log"] if query_log else []),
    ]
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr)
    server = ChdbHttpServer(port, process, data_path, stderr)
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    for line in _until(lines, deadline):
        if line.startswith("READY "):
            server.port = int(line.split()[1])
            return server
    reason = (
        f"exited with code {process.returncode}"
        if process.poll() is not None
        else f"gave no READY in {timeout:.0f} s"
    )
    server.stop()
    raise RuntimeError(f"chdb_http_server {reason}; stderr:\n{server.stderr()}")


def _until(lines: queue.Queue[str | None], deadline: float) -> Iterator[str]:
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return
        if line is None:
            return
        yield line


def _run_and_exit() -> None:
    """Run :func:`main`, then leave with ``os._exit``: chdb's threads can keep a failed process alive."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _run_and_exit()
