"""The chdb HTTP front answers the real clickhouse-connect client like a ClickHouse server."""

from __future__ import annotations

import base64
import gzip
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import pyarrow.parquet as pq
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.summary import QuerySummary

from tests.support.chdb_http_server import ChdbHttpServer, start_chdb_http_server

PASSWORD = "s3cret-pw"
ROW_ID = uuid.UUID("6f1c3a2e-1b7d-4c8e-9a0f-123456789abc")
INSERT_SQL = (
    "INSERT INTO events VALUES ('6f1c3a2e-1b7d-4c8e-9a0f-123456789abc', 'first', '2024-01-02 03:04:05.123456', 1),"
    " (generateUUIDv4(), 'second', '2024-01-02 23:59:59.999999', -2)"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChdbHttpServer]:
    with start_chdb_http_server(tmp_path / "chdb", password=PASSWORD) as srv:
        yield srv


def connect(srv: ChdbHttpServer, database: str | None = None, **kwargs: object) -> Client:
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=srv.port, username="default", password=PASSWORD, database=database, **kwargs
    )


def naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def test_create_insert_query_roundtrip(server: ChdbHttpServer) -> None:
    admin = connect(server)
    admin.command("CREATE DATABASE IF NOT EXISTS d")
    client = connect(server, database="d")
    client.command(
        "CREATE TABLE events (id UUID, name String, ts DateTime64(6, 'UTC'), n Int64) ENGINE = MergeTree ORDER BY n"
    )
    summary = client.command(INSERT_SQL)
    assert isinstance(summary, QuerySummary)
    assert summary.written_rows == 2

    result = client.query("SELECT id, name, ts, n FROM events ORDER BY n DESC")
    assert result.column_names == ("id", "name", "ts", "n")
    first = result.result_rows[0]
    assert first[0] == ROW_ID
    assert first[1] == "first"
    assert naive_utc(first[2]) == datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert first[3] == 1
    assert naive_utc(result.result_rows[1][2]) == datetime(2024, 1, 2, 23, 59, 59, 999999)
    assert result.summary["result_rows"] == "2"

    # client.insert(): Native data in the (lz4-compressed) body, the INSERT statement in the URL
    inserted = client.insert(
        "events",
        [[uuid.uuid4(), "third", datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=UTC), 3]],
        column_names=["id", "name", "ts", "n"],
    )
    assert inserted.written_rows == 1
    assert client.query("SELECT count() FROM d.events").result_rows == [(3,)]


def test_server_side_parameters_and_settings(server: ChdbHttpServer) -> None:
    client = connect(server)
    assert client.query("SELECT {x:String}", parameters={"x": "it's"}).result_rows == [("it's",)]
    tricky = "back\\slash\ttab\nnewline 'quote'"
    assert client.query("SELECT {x:String}, {n:Int64}", parameters={"x": tricky, "n": -7}).result_rows == [
        (tricky, -7)
    ]

    assert client.query("SELECT getSetting('max_threads')", settings={"max_threads": 1}).result_rows == [(1,)]
    # the per-request setting does not leak into the next request
    assert client.query("SELECT getSetting('max_threads')").result_rows != [(1,)]


def test_errors_and_authentication(server: ChdbHttpServer) -> None:
    client = connect(server)
    with pytest.raises(DatabaseError, match="Unknown table expression identifier 'missing_table'") as err:
        client.query("SELECT * FROM missing_table")
    assert "UNKNOWN_TABLE" in str(err.value)
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR"):
        client.command("SELEC 1")

    with pytest.raises(DatabaseError, match="Authentication failed") as auth_err:
        clickhouse_connect.get_client(
            host="127.0.0.1", port=server.port, username="default", password="wrong"
        )
    assert "516" in str(auth_err.value)
    assert "wrong" not in str(auth_err.value)
    assert PASSWORD not in server.stderr()


def test_insert_into_file_writes_parquet(server: ChdbHttpServer, tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.parquet"
    target.parent.mkdir()
    client = connect(server)
    # client-side binding puts the absolute path into the SQL as a plain string literal
    summary = client.command(
        "INSERT INTO FUNCTION file(%(path)s, 'Parquet') SELECT number AS n, toString(number) AS s FROM numbers(7)",
        parameters={"path": str(target)},
    )
    assert isinstance(summary, QuerySummary)
    assert summary.written_rows == 7
    table = pq.read_table(target)
    assert table.num_rows == 7
    assert table.column_names == ["n", "s"]


def test_http_details(server: ChdbHttpServer) -> None:
    with urllib.request.urlopen(f"{server.url}/ping", timeout=10) as response:
        assert response.read() == b"Ok.\n"

    request = urllib.request.Request(
        f"{server.url}/?enable_http_compression=1&default_format=JSONEachRow",
        data=b"SELECT 1 AS one",
        headers={
            "Authorization": "Basic " + base64.b64encode(f"default:{PASSWORD}".encode()).decode(),
            "Accept-Encoding": "gzip",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"
        assert response.headers["X-ClickHouse-Timezone"] == "UTC"
        assert json.loads(response.headers["X-ClickHouse-Summary"])["result_rows"] == "1"
        assert json.loads(gzip.decompress(response.read())) == {"one": 1}

    anonymous = urllib.request.Request(f"{server.url}/?query=SELECT%201")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=10)
    assert refused.value.code == 401
    assert refused.value.headers["X-ClickHouse-Exception-Code"] == "516"

    # the client works with and without negotiated compression
    for compress in (True, False):
        assert connect(server, compress=compress).query("SELECT 42").result_rows == [(42,)]
