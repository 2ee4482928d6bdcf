"""Reading a connection's extra fields whichever way they were stored.

Airflow 3's connection form stores extra fields under their plain names; connections created by older
tools or URIs may carry them prefixed (``extra__<conn_type>__<name>``). Both are accepted; the plain name
wins, and an empty string means "not set".
"""

from __future__ import annotations

from typing import Any


def connection_extras(conn: Any, conn_type: str) -> dict[str, Any]:
    """The connection's extra dict with prefixed keys folded into plain names and empty values dropped."""
    raw = conn.extra_dejson or {}
    prefix = f"extra__{conn_type}__"
    folded = {key.removeprefix(prefix): value for key, value in raw.items() if key.startswith(prefix)}
    folded.update({key: value for key, value in raw.items() if not key.startswith(prefix)})
    return {key: value for key, value in folded.items() if value not in ("", None)}


def require_type(conn: Any, conn_id: str, conn_type: str, purpose: str) -> None:
    """Refuse a connection of another type than ``conn_type`` before anything is sent anywhere: a
    connection's secret goes only where that connection is meant to go (a registry entry naming the
    ClickHouse connection as its catalog would otherwise send ClickHouse's password to the catalog host).

    :raises ConfigurationError: one line naming the connection, its type and the expected one.
    """
    from airflow_provider_duckling.common.errors import ConfigurationError, quoted

    if (conn.conn_type or "") != conn_type:
        raise ConfigurationError(
            f"connection {quoted(conn_id)} is of type {quoted(conn.conn_type or '')}, not {conn_type!r}: "
            f"{purpose} must name a {conn_type} connection; nothing was sent"
        )
