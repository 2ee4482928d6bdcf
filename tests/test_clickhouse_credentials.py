"""The assumed role's session credentials reach ClickHouse only in the request body: never in a request line
(URL) or a header, which proxies, load balancers and access logs in front of ClickHouse record. A recording
proxy sits between clickhouse-connect and the ClickHouse HTTP interface while a real export runs."""

from __future__ import annotations

import json
import re

from airflow_provider_duckling.export import export_partition, merged_settings
from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.partitions import Partition
from airflow_provider_duckling.tables import EVENTS
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
