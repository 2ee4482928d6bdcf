"""A TCP proxy on loopback that can cut a real connection mid-stream, or hold it half sent: the way the
suite takes S3 or PostgreSQL "down" at the worst moment without mocking either. It can also record what a
client sends (what a proxy or load balancer in front of a server would see)."""

from __future__ import annotations

import socket
import threading
import time


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>.

    ``arm(after_bytes, down_for)`` cuts every connection once ``after_bytes`` more bytes went upstream,
    then refuses connections for ``down_for`` seconds. ``hold_after(n_bytes)`` instead stops forwarding
    client bytes once that many more have passed (the request stays open, half sent) until :meth:`release`;
    :attr:`holding` is set while a connection is held. With ``record``, every byte sent upstream is kept,
    per connection, in :attr:`recorded`.
    """

    def __init__(self, target_port: int, record: bool = False) -> None:
        self.target_port = target_port
        self.record = record
        self.recorded: list[bytearray] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._down_until = 0.0
        self._budget: int | None = None
        self._down_for = 0.0
        self.upstream_bytes = 0
        self.cuts = 0
        self._hold_budget: int | None = None
        self._gate = threading.Event()
        self._gate.set()
        self.holding = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, after_bytes: int, down_for: float) -> None:
        with self._lock:
            self._budget = self.upstream_bytes + after_bytes
            self._down_for = down_for

    def disarm(self) -> None:
        with self._lock:
            self._budget = None

    def hold_after(self, n_bytes: int) -> None:
        with self._lock:
            self._hold_budget = self.upstream_bytes + n_bytes

    def release(self) -> None:
        with self._lock:
            self._hold_budget = None
        self._gate.set()

    def _cut(self) -> None:
        with self._lock:
            self._budget = None
            self._down_until = time.monotonic() + self._down_for
            self.cuts += 1
            victims = list(self._sockets)
        for sock in victims:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
                sent = bytearray()
                if self.record:
                    self.recorded.append(sent)
            threading.Thread(target=self._pump, args=(client, upstream, True, sent), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counts: bool, sent: bytearray | None = None) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if sent is not None and self.record:
                    sent += data
                if counts:
                    with self._lock:
                        self.upstream_bytes += len(data)
                        trip = self._budget is not None and self.upstream_bytes >= self._budget
                        if self._hold_budget is not None and self.upstream_bytes >= self._hold_budget:
                            self._hold_budget = None
                            self._gate.clear()
                            self.holding.set()
                    if trip:
                        self._cut()
                        return
                    self._gate.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)

    def close(self) -> None:
        self._closed = True
        self.release()
        self._listener.close()
