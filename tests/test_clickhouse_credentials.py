"""The assumed role's session credentials reach ClickHouse only in the request body: never in a request line
(URL) or a header, which proxies, load balancers and access logs in front of ClickHouse record. A recording
proxy sits between clickhouse-connect and the ClickHouse HTTP interface while a real export runs."""

from __future__ import annotations

import json
import re

from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.transfer.export import export_partition, merged_settings
from tests.support.faulty_proxy import FaultyProxy
from tests.support.stack import DAYS

_HEAD = re.compile(rb"(?:GET|POST|HEAD) [^\r\n]* HTTP/1\.[01]\r\n(?:[^\r\n]+\r\n)*\r\n")


def test_session_credentials_never_travel_in_a_request_line_or_header(stack, monkeypatch):
    duckling = stack.new_duckling(2, "no-url-secrets")
    stack.use(duckling)
    proxy = FaultyProxy(stack.clickhouse_port, record=True)
    conn = json.loads(stack.connection_env()["AIRFLOW_CONN_CLICKHOUSE_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT", json.dumps({**conn, "port": proxy.port}))
    try:
        storage = DuckLakeHook().storage(duckling, will_attach=False)
        creds = storage.credentials
        assert creds is not None and creds.session_token, "the export writes with an assumed-role session"
        result = export_partition(ClickHouseHook(), storage, EVENTS, Partition(2, DAYS[1]), "no-url-secrets",
                                  merged_settings(None))
    finally:
        proxy.close()
    assert result.rows == stack.counts[(2, DAYS[1])] > 0
    sent = b"".join(bytes(c) for c in proxy.recorded)
    heads = b"".join(_HEAD.findall(sent))
    assert heads.count(b"POST ") >= 3  # the count, the export and the footer read all went through the proxy
    for secret in (creds.key_id, creds.secret, creds.session_token):
        assert secret.encode() in sent  # the recording saw them: in the body…
        assert secret.encode() not in heads  # …never in a request line or a header
    assert b"param_dest_secret" not in heads and b"param_" not in heads


def test_the_statement_text_that_a_query_log_records_holds_no_credential(stack, monkeypatch):
    """ClickHouse's ``system.query_log`` and server log record the statement text, with its ``{name:Type}``
    placeholders, not the values bound to them. chdb has no query log, so this reads what the server would
    log: the ``query`` field of each request, apart from the ``param_*`` fields that carry the values."""
    from email import message_from_bytes
    from urllib.parse import parse_qs

    duckling = stack.new_duckling(2, "no-log-secrets")
    stack.use(duckling)
    proxy = FaultyProxy(stack.clickhouse_port, record=True)
    conn = json.loads(stack.connection_env()["AIRFLOW_CONN_CLICKHOUSE_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_CLICKHOUSE_DEFAULT", json.dumps({**conn, "port": proxy.port}))
    try:
        storage = DuckLakeHook().storage(duckling, will_attach=False)
        export_partition(ClickHouseHook(), storage, EVENTS, Partition(2, DAYS[2]), "no-log-secrets", merged_settings(None))
    finally:
        proxy.close()
    creds = storage.credentials
    statements: list[str] = []
    params: dict[str, list[str]] = {}
    for chunk in proxy.recorded:
        for request in re.split(rb"(?=POST /)", bytes(chunk)):
            head, _, body = request.partition(b"\r\n\r\n")
            if b"multipart/form-data" in head:
                boundary = re.search(rb"boundary=([^\r\n;]+)", head).group(1)
                form = message_from_bytes(b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n" + body)
                fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
                          for part in form.get_payload()}
            elif b"application/x-www-form-urlencoded" in head:
                fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            else:
                continue
            statements.append(fields.pop("query", ""))
            for name, value in fields.items():
                params.setdefault(name, []).append(value)
    exports = [s for s in statements if s.startswith("INSERT INTO FUNCTION s3({dest_url:String}, {dest_key_id:String}")]
    assert len(exports) == 1
    assert creds.secret in params["param_dest_secret"] and creds.session_token in params["param_dest_token"]
    for secret in (creds.key_id, creds.secret, creds.session_token):
        assert not [s for s in statements if secret in s]
