"""What Airflow's providers manager reads about this package, declared as data (no hook import needed).

The DuckLake connection form is declared here (``conn-fields`` and ``ui-field-behaviour``), the way Airflow 3.2+
wants it: the UI builds the form from this without importing the hook. Extra fields are stored in the
connection's ``extra`` under their plain names.

The ``clickhouse`` connection type is not ours: the official provider (``apache-airflow-providers-clickhousedb``)
registers it with its form, and our export hook extends its hook. Registering it again would make Airflow
keep one of the two forms and hooks, and warn about the other.
"""

from __future__ import annotations

from typing import Any


def _field(label: str, kind: str, description: str, default: Any = None, **schema: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": [kind, "null"], **schema}
    if default is not None:
        spec["default"] = default
    return {"label": label, "description": description, "schema": spec}


DUCKLAKE_CONNECTION: dict[str, Any] = {
    "connection-type": "ducklake",
    "hook-class-name": "airflow_provider_duckling.hooks.ducklake.DuckLakeHook",
    "hook-name": "DuckLake (duckling catalogs)",
    "ui-field-behaviour": {
        # Each duckling names its own catalog database and host in the registry.
        "hidden-fields": ["schema"],
        "relabeling": {
            "host": "Catalog host to test",
            "port": "Default catalog port",
            "login": "Catalog user",
            "password": "Catalog password",
        },
        "placeholders": {
            "host": "optional: a catalog server the Test button logs in to (ducklings name theirs in the registry)",
            "port": "5432",
            "login": "ducklake_writer",
            "password": "catalog user's password",
        },
    },
    "conn-fields": {
        "aws_conn_id": _field(
            "AWS connection", "string", "Amazon connection whose identity assumes each duckling's role.", "aws_default",
        ),
        "s3_endpoint_url": _field(
            "S3 endpoint URL", "string", "S3-compatible endpoint (MinIO): http(s)://host:port. Empty for AWS.",
        ),
        "console_url": _field(
            "Object browser URL", "string",
            "Template of the task's 'Exported objects' link, with {bucket} {prefix} {region}; "
            "empty for the AWS S3 console (MinIO: http://localhost:9001/browser/{bucket}/{prefix}).",
        ),
        "sslmode": _field(
            "Catalog sslmode", "string", "libpq sslmode for the PostgreSQL catalogs.", "prefer",
            enum=["disable", "allow", "prefer", "require", "verify-ca", "verify-full", None],
        ),
        "local_root": _field(
            "Embedded lakes directory", "string",
            "Embedded mode: catalogs as DuckDB files and data under this directory; no S3, PostgreSQL or role.",
        ),
    },
}


def provider_info(version: str) -> dict[str, Any]:
    """The provider metadata dict (see :func:`airflow_provider_duckling.get_provider_info`)."""
    return {
        "package-name": "airflow-provider-duckling",
        "name": "Duckling",
        "description": "Back-fill ClickHouse events and persons into per-customer DuckLake lakes.",
        "versions": [version],
        "connection-types": [DUCKLAKE_CONNECTION],
        "hook-class-names": [DUCKLAKE_CONNECTION["hook-class-name"]],
        "extra-links": ["airflow_provider_duckling.links.exported_objects.ExportedObjectsLink"],
    }
