"""DuckDB connections with the lake extensions loaded offline, from the installed ``duckdb-extension-*`` packages.

Why the pinned hashes: DuckDB checks an extension's signature on every ``LOAD`` by hashing the whole file
(about 100 MB for the three we use), which took 0.2 s of every lake attach on 2 cores — the largest fixed
cost of a register task. The files of the pinned packages are listed below by their chunked SHA-256, and
the test suite proves that DuckDB accepts each listed file's signature. A connection whose every extension
file hashes (with OpenSSL, 8 MiB chunks on every core, at most once per process and file) to a listed
value loads them with the signature check off; any other file — another platform, another version, a
modified copy — goes through DuckDB's own signature check exactly as before, and an unsigned one is
refused.

The chunked SHA-256 of a file is the SHA-256 of the concatenated SHA-256 digests of its consecutive 8 MiB
chunks: as collision-resistant as SHA-256, and computed in parallel. To check a pin by hand::

    split -b 8388608 ducklake.duckdb_extension chunk. && \
      for c in chunk.*; do sha256sum "$c" | cut -c1-64 | xxd -r -p; done | sha256sum

Autoinstall and autoload stay off, so nothing here ever reaches the network.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb

from airflow_provider_duckling.common.errors import ConfigurationError
from airflow_provider_duckling.common.quoting import duckdb_str

#: Extension name → the package that ships its file.
PACKAGES = {
    "ducklake": "duckdb_extension_ducklake",
    "httpfs": "duckdb_extension_httpfs",
    # The postgres extension's file must be loaded from the postgres_scanner package (STACK.md).
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}
#: Everything a duckling on S3 with a PostgreSQL catalog needs.
ALL = tuple(PACKAGES)
#: An embedded lake (DuckDB-file catalog, local data) needs only DuckLake: Parquet is built into DuckDB.
LOCAL = ("ducklake",)

#: Bytes hashed per piece of work: the pieces of a file are hashed in parallel.
CHUNK = 8 << 20
#: Chunked SHA-256 of extension files whose DuckDB signature the test suite checks (DuckDB 1.5.5, linux x86_64).
SIGNED_CHUNKED_SHA256 = frozenset({
    "90466ed84fa4ce61d3e1d1e2cce73858edc7516fc8269705bd1495417f4b56ce",  # ducklake
    "ca0d39cca1d6dbc010b7dcd93a64143c9aaf377e727b27dcec2f3c611648c159",  # httpfs
    "a94999b48bc842cd37d97368b2097e3c4a24b2f9cf1e24d904ec40d3a412b677",  # postgres_scanner
})


class _Digest:
    """A file's chunked SHA-256 while its chunks are hashed in the background."""

    def __init__(self, chunks: list[Future[bytes]]) -> None:
        self._chunks = chunks

    def failed(self) -> bool:
        return any(chunk.done() and chunk.exception() is not None for chunk in self._chunks)

    def result(self) -> str:
        return hashlib.sha256(b"".join(chunk.result() for chunk in self._chunks)).hexdigest()


_digests: dict[tuple[str, int, int, int, int], _Digest] = {}
_digests_lock = threading.Lock()
_hashing: ThreadPoolExecutor | None = None


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: start over with a new pool, lock and memory."""
    global _hashing, _digests_lock
    _hashing, _digests_lock = None, threading.Lock()
    _digests.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def extension_path(name: str) -> Path:
    """Path of an extension file shipped in its ``duckdb-extension-*`` package for this DuckDB version."""
    package = PACKAGES[name]
    module = importlib.import_module(package)
    path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise ConfigurationError(f"{package} has no {name} extension for DuckDB v{duckdb.__version__} (pin duckdb==1.5.5)")
    return path


def _digest(path: Path) -> _Digest:
    """The chunked SHA-256 of ``path`` being computed in the background, or already known: one computation
    per process while the file's inode, size and times are unchanged."""
    global _hashing
    stat = os.stat(path)
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    with _digests_lock:
        digest = _digests.get(key)
        if digest is None or digest.failed():
            if _hashing is None:
                workers = max(2, min(8, os.cpu_count() or 2))
                _hashing = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="duckling-extension-hash")
            chunks = [_hashing.submit(_chunk_sha256, path, offset) for offset in range(0, stat.st_size, CHUNK)]
            digest = _digests[key] = _Digest(chunks)
    return digest


#: Bytes read at a time within a chunk: a worker holds this much, not a whole chunk.
_READ = 1 << 20


def _chunk_sha256(path: Path, offset: int) -> bytes:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:  # pread and hashlib both free the GIL, so chunks are read and hashed on every core
        for start in range(offset, offset + CHUNK, _READ):
            piece = os.pread(fd, _READ, start)
            digest.update(piece)
            if len(piece) < _READ:
                break
    finally:
        os.close(fd)
    return digest.digest()


def chunked_sha256(path: Path) -> str:
    """Chunked SHA-256 of ``path`` (see the module's docstring), remembered for this process while the file's
    inode, size and times are unchanged."""
    return _digest(path).result()


def prefetch(extensions: Iterable[str] = ALL) -> None:
    """Start hashing the files of ``extensions`` in the background, so that a later connection finds them
    checked (the operators call this before they read the registry, the hook before it assumes a role)."""
    for name in extensions:
        _digest(extension_path(name))


def forget_hashes() -> None:
    """Drop the remembered hashes (a benchmark measuring a fresh task process calls this)."""
    with _digests_lock:
        _digests.clear()


def connect_with(paths: Sequence[Path]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB in UTC with the extension files ``paths`` loaded.

    DuckDB's own signature check is skipped only when every file is one of the pinned, signed files. The
    files are hashed (in parallel, unless :func:`prefetch` already did) while DuckDB starts; nothing is
    loaded before every hash is known."""
    digests = [_digest(path) for path in paths]
    con = _connect(allow_unsigned=True)
    try:
        trusted = all(digest.result() in SIGNED_CHUNKED_SHA256 for digest in digests)
    except BaseException:
        con.close()
        raise
    if not trusted:
        con.close()
        con = _connect(allow_unsigned=False)
    try:
        for path in paths:
            con.execute(f"LOAD {duckdb_str(str(path))}")
        con.execute("SET TimeZone = 'UTC'")
    except BaseException:
        con.close()
        raise
    return con


def _connect(allow_unsigned: bool) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_unsigned_extensions": allow_unsigned,
    })


def connect_duckdb(extensions: Iterable[str] = ALL) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with ``extensions`` (default: all three) loaded offline and the session in UTC."""
    return connect_with([extension_path(name) for name in extensions])
