"""The task link "Exported objects": from an export or register task to the files it moved.

Airflow 3 computes a link when the task finishes, on the worker, and keeps it as XCom; the operator
remembers the objects' location while it runs (:attr:`objects_url`).

Airflow's UI shows a link only when it is http(s), mailto or on its own site. A lake on S3 links to the
bucket's console (AWS, or the ``ducklake`` connection's ``console_url``). An embedded lake's files are on
the worker's disk, which no browser can open: its link opens the export task's XCom in Airflow itself,
whose ``return_value`` lists the partition's files (``files``: their paths), rows and bytes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

AWS_CONSOLE = "https://s3.console.aws.amazon.com/s3/buckets/{bucket}?region={region}&prefix={prefix}"
LOCAL_PREFIX = "file://"


def objects_url(bucket: str, region: str, prefix: str, console_url: str | None = None, local_dir: str | None = None) -> str:
    """Where a person browses the partition's objects: a configured object browser (``console_url`` with
    ``{bucket}``, ``{prefix}``, ``{region}``), the AWS console, or, for an embedded lake without
    ``console_url``, the local directory as a ``file://`` URL (turned into a UI link by the link class)."""
    if local_dir is not None and not console_url:
        return LOCAL_PREFIX + quote(f"{local_dir.rstrip('/')}/{prefix}")
    template = console_url or AWS_CONSOLE
    return template.format(bucket=quote(bucket, safe=""), region=quote(region, safe=""), prefix=quote(prefix, safe="/="))


def xcom_page(dag_id: str, run_id: str, task_id: str) -> str:
    """The task's XCom tab in Airflow's UI, relative to the UI's base URL (a sub-path deployment works too)."""
    return f"dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}/xcom"


class ExportedObjectsLink(BaseOperatorLink):
    """Link from a duckling task to the partition's exported Parquet objects: their folder in the bucket's
    console, or (embedded lake) the export's XCom listing them."""

    name = "Exported objects"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        url = getattr(operator, "objects_url", None) or ""
        if url.startswith(LOCAL_PREFIX):
            export_task = getattr(operator, "export_task_id", None) or ti_key.task_id
            return xcom_page(ti_key.dag_id, ti_key.run_id, export_task)
        return url
