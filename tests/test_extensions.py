"""DuckDB's extensions load offline; DuckDB's signature check is skipped only for the pinned files it has
signed, and a file that differs from them in one bit is refused."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys

import duckdb
import pytest

from airflow_provider_duckling.access.extensions import (
    ALL,
    CHUNK,
    SIGNED_CHUNKED_SHA256,
    _connect,
    chunked_sha256,
    connect_with,
    extension_path,
)
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.registry.catalog import Duckling


def _loaded(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for (name,) in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="the pins are of the linux x86_64 files; elsewhere DuckDB's own check applies")
@pytest.mark.parametrize("name", ALL)
def test_each_installed_extension_is_pinned_and_passes_duckdbs_own_signature_check(name):
    path = extension_path(name)
    assert chunked_sha256(path) in SIGNED_CHUNKED_SHA256
    con = _connect(allow_unsigned=False)  # DuckDB verifies the signature of what it loads here
    try:
        con.execute(f"LOAD '{path}'")
        assert name in _loaded(con)
    finally:
        con.close()


@pytest.mark.parametrize("size", [0, 5, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_the_chunked_digest_is_sha256_over_the_chunks_sha256_digests(tmp_path, size):
    """The definition the module's docstring gives (and its shell recipe reproduces), computed plainly."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / f"{size}.bin"
    path.write_bytes(data)
    pieces = [hashlib.sha256(data[offset:offset + CHUNK]).digest() for offset in range(0, size, CHUNK)]
    assert chunked_sha256(path) == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_a_one_bit_change_is_not_trusted_and_duckdb_refuses_it(tmp_path):
    copy = tmp_path / "ducklake.duckdb_extension"
    shutil.copyfile(extension_path("ducklake"), copy)
    assert chunked_sha256(copy) == chunked_sha256(extension_path("ducklake"))  # same bytes, same verdict anywhere
    con = connect_with([copy])
    assert "ducklake" in _loaded(con)
    con.close()

    with open(copy, "r+b") as handle:  # same size, one bit flipped: the remembered hash must not be reused
        handle.seek(4096)
        byte = handle.read(1)
        handle.seek(4096)
        handle.write(bytes([byte[0] ^ 1]))
    assert chunked_sha256(copy) not in SIGNED_CHUNKED_SHA256
    with pytest.raises(duckdb.IOException, match="signature is either missing or invalid"):
        connect_with([copy])


def test_an_embedded_lake_loads_only_ducklake_and_runs_in_utc(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DUCKLAKE_EXT", json.dumps({"conn_type": "ducklake", "extra": {"local_root": str(tmp_path)}}))
    duckling = Duckling(7, "ext-bucket", "us-east-1", "localhost", "ext_lake", "arn:aws:iam::000000000000:role/x", "x")
    with DuckLakeHook("ducklake_ext").attach(duckling) as con:
        loaded = _loaded(con)
        (zone,) = con.execute("SELECT current_setting('TimeZone')").fetchone()
    assert "ducklake" in loaded
    assert not loaded & {"httpfs", "postgres_scanner"}
    assert zone == "UTC"


def test_hashing_started_before_a_fork_still_answers_in_the_child():
    import os
    import signal
    import time

    from airflow_provider_duckling.access.extensions import forget_hashes, prefetch

    forget_hashes()
    prefetch(("ducklake",))  # a background hash in flight (or done) in this process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own pool; the answer must come, not hang
        os.close(read)
        os.write(write, chunked_sha256(extension_path("ducklake")).encode())
        os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:  # a child stuck on the parent's dead hashing threads
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child never got its hash: it waited on the parent's hashing threads")
    answer = os.read(read, 100).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert answer == chunked_sha256(extension_path("ducklake"))
