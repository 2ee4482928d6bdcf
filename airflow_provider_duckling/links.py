"""The task link "Exported objects": from an export or register task to the files it moved.

Airflow 3 computes a link when the task finishes, on the worker, and keeps it as XCom; the operator
remembers the objects' location while it runs (:attr:`objects_url`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

AWS_CONSOLE = "https://s3.console.aws.amazon.com/s3/buckets/{bucket}?region={region}&prefix={prefix}"


def objects_url(bucket: str, region: str, prefix: str, console_url: str | None = None, local_dir: str | None = None) -> str:
    """Where a person browses the partition's objects: the AWS console, a configured object browser
    (``console_url`` with ``{bucket}``, ``{prefix}``, ``{region}``), or the local directory (embedded)."""
    if local_dir is not None:
        return "file://" + quote(f"{local_dir.rstrip('/')}/{prefix}")
    template = console_url or AWS_CONSOLE
    return template.format(bucket=quote(bucket, safe=""), region=quote(region, safe=""), prefix=quote(prefix, safe="/="))


class ExportedObjectsLink(BaseOperatorLink):
    """Link from a duckling task to the directory of the partition's exported Parquet objects."""

    name = "Exported objects"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return getattr(operator, "objects_url", None) or ""
