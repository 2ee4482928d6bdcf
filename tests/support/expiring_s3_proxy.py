"""An S3 proxy on loopback whose session tokens expire on cue: moto never expires an STS session, so the
suite puts this HTTP-aware proxy between the engines and moto to make temporary credentials run out in the
middle of a real export or registration.

Every request is parsed (keep-alive, ``Content-Length`` or chunked bodies, ``Expect: 100-continue``) and
its session token read from the ``X-Amz-Security-Token`` header (signed requests) or query parameter
(presigned URLs). A request carrying an expired token gets the answer AWS S3 gives::

    HTTP/1.1 400 Bad Request
    Content-Type: application/xml

    <?xml version="1.0" encoding="UTF-8"?>
    <Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message><Token-0>…the token…</Token-0><RequestId>…</RequestId><HostId>…</HostId></Error>

(AWS echoes the token in ``Token-0``; so does this proxy, so that a client that logs the whole answer is
caught leaking it.) Any other request is forwarded to moto as it came (body de-chunked, hop-by-hop headers
dropped, ``Host`` and the signature untouched) and moto's answer streamed back.

Like AWS, a token is checked when a request arrives: a request admitted before its token expired completes.
The proxy keeps token values only to recognise them and never exposes them: it numbers them in the order
it first saw them (:meth:`ExpiringS3Proxy.saw_token` answers whether it saw a given value).
"""

from __future__ import annotations

import http.client
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

EXPIRED_MESSAGE = "The provided token has expired."
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "content-length",
}
_MAX_LOGGED = 20_000
_UPSTREAM_TIMEOUT = 120.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class S3Request:
    """What the proxy saw of one request (never a credential value)."""

    method: str
    path: str  # without the query string
    query: tuple[str, ...]  # the query parameter names
    agent: str
    token: int | None  # 1 for the first session token the proxy saw, 2 for the next, …
    status: int = 0  # the answer's status (0: none, S3 unreachable or the client left before it)
    expired: bool = False  # answered ExpiredToken by the proxy (not forwarded)
    forwarded_bytes: int = 0  # request bytes (line, headers, body) that went on to S3


@dataclass
class _Trigger:
    budget: int  # trips once the byte counter reaches this
    when: Callable[[S3Request], bool] | None
    current_too: bool


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: dict[str, int] = field(default_factory=dict)  # token → its number
    expired: set[str] = field(default_factory=set)
    trigger: _Trigger | None = None
    upstream_bytes: int = 0
    expired_answers: int = 0
    expiries: int = 0
    tripped_after: int | None = None  # bytes counted between arming and the expiry
    armed_at: int = 0
    requests: list[S3Request] = field(default_factory=list)


class ExpiringS3Proxy:
    """Forwards ``127.0.0.1:<port>`` to an S3 server on ``127.0.0.1:<target_port>``; sessions expire on cue.

    ``expire_after(n)``: once ``n`` more request bytes have arrived, every session token seen so far is
    expired; a token first seen afterwards (a freshly assumed session) works. With ``when``, the expiry
    happens instead at the first request, after those bytes, that ``when`` accepts (and that request's own
    token expires with the others unless ``current_too`` is false). One shot; :meth:`expire_now` expires at once.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._state = _State()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ the cue

    def expire_after(
        self, nbytes: int, *, when: Callable[[S3Request], bool] | None = None, current_too: bool = True,
    ) -> None:
        with self._state.lock:
            self._state.trigger = _Trigger(self._state.upstream_bytes + nbytes, when, current_too)
            self._state.armed_at = self._state.upstream_bytes
            if nbytes <= 0 and when is None:
                self._trip(None)

    def expire_now(self) -> None:
        """Every session token seen so far is expired from now on."""
        self.expire_after(0)

    def disarm(self) -> None:
        with self._state.lock:
            self._state.trigger = None

    def _trip(self, spare: str | None) -> None:
        """Expire every token seen so far but ``spare`` (caller holds the lock)."""
        state = self._state
        state.expired |= {token for token in state.tokens if token != spare}
        state.trigger = None
        state.expiries += 1
        state.tripped_after = state.upstream_bytes - state.armed_at

    # ------------------------------------------------------------------ what happened

    @property
    def upstream_bytes(self) -> int:
        """Request bytes (request line, headers, body) received from clients and forwarded to S3."""
        return self._state.upstream_bytes

    @property
    def expired_answers(self) -> int:
        """How many requests were answered ``ExpiredToken``."""
        return self._state.expired_answers

    @property
    def expiries(self) -> int:
        """How many times the trigger went off."""
        return self._state.expiries

    @property
    def tripped_after(self) -> int | None:
        """Request bytes that had arrived between arming and the (last) expiry; None if it never went off."""
        return self._state.tripped_after

    @property
    def tokens_seen(self) -> int:
        return len(self._state.tokens)

    def saw_token(self, value: str) -> bool:
        """Whether ``value`` is a session token some request carried (values are never listed)."""
        with self._state.lock:
            return value in self._state.tokens

    @property
    def expired_tokens(self) -> set[int]:
        """The numbers of the tokens that are expired."""
        with self._state.lock:
            return {self._state.tokens[t] for t in self._state.expired}

    @property
    def requests(self) -> list[S3Request]:
        with self._state.lock:
            return list(self._state.requests)

    # ------------------------------------------------------------------ used by the handler

    def _admit(self, request: S3Request, token: str | None, header_bytes: int) -> tuple[S3Request, bool]:
        """Number the request's token, fire a ``when`` trigger, and say whether the token has expired."""
        state = self._state
        with state.lock:
            new = token is not None and token not in state.tokens
            if token is not None and new:
                state.tokens[token] = len(state.tokens) + 1
            request = S3Request(request.method, request.path, request.query, request.agent,
                                state.tokens.get(token) if token is not None else None)
            trigger = state.trigger
            if trigger and trigger.when is not None and state.upstream_bytes >= trigger.budget and trigger.when(request):
                # A token this very request shows for the first time may be spared; one seen before never is.
                self._trip(token if new and not trigger.current_too else None)
            expired = token is not None and token in state.expired
            if not expired:
                self._count_locked(header_bytes)
            return request, expired

    def _count(self, nbytes: int) -> None:
        with self._state.lock:
            self._count_locked(nbytes)

    def _count_locked(self, nbytes: int) -> None:
        state = self._state
        state.upstream_bytes += nbytes
        trigger = state.trigger
        if trigger and trigger.when is None and state.upstream_bytes >= trigger.budget:
            self._trip(None)

    def _record(self, request: S3Request, status: int, expired: bool = False, forwarded: int = 0) -> None:
        with self._state.lock:
            self._state.expired_answers += expired
            if len(self._state.requests) < _MAX_LOGGED:
                self._state.requests.append(S3Request(request.method, request.path, request.query, request.agent,
                                                      request.token, status, expired, forwarded))

    def close(self) -> None:
        """Stop listening and drop every open client connection (their threads then end)."""
        self._server.shutdown()
        self._server.server_close()
        with self._server.lock:
            open_connections = list(self._server.connections)
        for sock in open_connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(10)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: ExpiringS3Proxy

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection is dropped after this
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:  # the client is gone
            pass

    # ------------------------------------------------------------------ admission

    def parse_request(self) -> bool:
        self._admitted: tuple[S3Request, str | None, bool] | None = None
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        """Check the token before the client sends its body (as S3 does): an expired one never uploads."""
        request, token, expired = self._admission()
        if expired:
            self.close_connection = True
            self._expired_token(request, token, head=False)
            return False
        return super().handle_expect_100()

    def _admission(self) -> tuple[S3Request, str | None, bool]:
        if self._admitted is None:
            split = urlsplit(self.path)
            query = parse_qs(split.query, keep_blank_values=True)
            token = self.headers.get("X-Amz-Security-Token") or next(
                (values[0] for name, values in query.items() if name.lower() == "x-amz-security-token"), None
            )
            seen = S3Request(self.command, split.path, tuple(sorted(query)), self.headers.get("User-Agent", ""), None)
            header_bytes = len(self.raw_requestline) + len(self.headers.as_bytes())
            request, expired = self.server.proxy._admit(seen, token, header_bytes)
            self._admitted = (request, token, expired)
            self._forwarded = 0 if expired else header_bytes
        return self._admitted

    # ------------------------------------------------------------------ every method

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _proxy(self) -> None:
        request, token, expired = self._admission()
        body = self._read_body(count=not expired)
        if expired:
            self._expired_token(request, token, head=self.command == "HEAD")
            return
        self._status = 0
        try:
            self._forward(body)
        except (OSError, http.client.HTTPException):
            self.close_connection = True  # S3 or the client went away: so does this connection
        finally:
            self.server.proxy._record(request, self._status, forwarded=self._forwarded)

    def _read_body(self, count: bool) -> bytes | None:
        """The request body (de-chunked), each piece counted as it arrives."""
        proxy = self.server.proxy
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65536).strip():  # trailers, up to the blank line
                        pass
                    return bytes(body)
                piece = self.rfile.read(size)
                self.rfile.readline(16)  # the CRLF after the chunk
                body += piece
                if count:
                    proxy._count(len(piece))
                    self._forwarded += len(piece)
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        remaining, body = int(length), bytearray()
        while remaining:
            piece = self.rfile.read(min(remaining, _CHUNK))
            if not piece:
                raise ConnectionError("client closed the connection mid-body")
            body += piece
            remaining -= len(piece)
            if count:
                proxy._count(len(piece))
                self._forwarded += len(piece)
        return bytes(body)

    def _forward(self, body: bytes | None) -> None:
        """Send the request to S3 and stream its answer back (its status kept in ``_status``)."""
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.proxy.target_port, timeout=_UPSTREAM_TIMEOUT)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            if body is not None:
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            self._status = response.status
            self.send_response_only(response.status, response.reason)
            length = response.getheader("Content-Length")
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            bodyless = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
            if bodyless:
                if length is not None:
                    self.send_header("Content-Length", length)
                self.end_headers()
            elif length is not None:
                self.send_header("Content-Length", length)
                self.end_headers()
                while piece := response.read(_CHUNK):
                    self.wfile.write(piece)
            else:
                payload = response.read()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            if (response.getheader("Connection") or "").lower() == "close":
                self.close_connection = True
        finally:
            upstream.close()

    def _expired_token(self, request: S3Request, token: str | None, head: bool) -> None:
        request_id = secrets.token_hex(8).upper()
        host_id = secrets.token_urlsafe(48)
        payload = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>ExpiredToken</Code><Message>{EXPIRED_MESSAGE}</Message><Token-0>{token}</Token-0>"
            f"<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>"
        ).encode()
        self.send_response_only(400, "Bad Request")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("x-amz-id-2", host_id)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Date", formatdate(usegmt=True))
        self.send_header("Server", "AmazonS3")
        self.send_header("Content-Length", "0" if head else str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(payload)
        self.server.proxy._record(request, 400, expired=True)
