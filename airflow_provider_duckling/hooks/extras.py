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
