"""DuckDB connections with the lake extensions loaded offline, from the installed ``duckdb-extension-*`` packages.

Why the pinned hashes: DuckDB checks an extension's signature on every ``LOAD`` by hashing the whole file
(about 100 MB for the three we use), which took 0.2 s of every lake attach on 2 cores — the largest fixed
cost of a register task. The files of the pinned packages are listed below by SHA-256, and the test suite
proves that DuckDB accepts each listed file's signature. A connection whose every extension file hashes
(with OpenSSL, about 3x faster, at most once per process and file) to a listed value loads them with the
signature check off; any other file — another platform, another version, a modified copy — goes through
DuckDB's own signature check exactly as before, and an unsigned one is refused.

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

from airflow_provider_duckling.errors import ConfigurationError
from airflow_provider_duckling.quoting import duckdb_str

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

#: SHA-256 of extension files whose DuckDB signature the test suite checks (DuckDB 1.5.5, linux x86_64).
SIGNED_SHA256 = frozenset({
    "e51bf9e8d933d0e83780ae096455501b542cf962569a2ce5613532d702c08302",  # ducklake
    "887c392b1e49128d11667c81e3698d8b00dfdeb456771acf66d05a0f74f7b7d8",  # httpfs
    "b1ced4cfc6311313e117c2afb3eac76508718778dde0716421503c7dbfb5605c",  # postgres_scanner
})

_digests: dict[tuple[str, int, int, int, int], Future[str]] = {}
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


def _digest(path: Path) -> Future[str]:
    """The SHA-256 of ``path`` being computed in the background, or already known: one computation per
    process while the file's inode, size and times are unchanged."""
    global _hashing
    stat = os.stat(path)
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    with _digests_lock:
        future = _digests.get(key)
        if future is None or (future.done() and future.exception() is not None):
            if _hashing is None:
                _hashing = ThreadPoolExecutor(max_workers=len(PACKAGES), thread_name_prefix="duckling-extension-hash")
            future = _digests[key] = _hashing.submit(_sha256, path)
    return future


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:  # hashlib frees the GIL while it hashes
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of ``path``, remembered for this process while the file's inode, size and times are unchanged."""
    return _digest(path).result()


def prefetch(extensions: Iterable[str] = ALL) -> None:
    """Start hashing the files of ``extensions`` in the background, so that a later connection finds them
    checked (the hook calls this before it assumes a role: the hashing overlaps the STS round trip)."""
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
        trusted = all(digest.result() in SIGNED_SHA256 for digest in digests)
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
