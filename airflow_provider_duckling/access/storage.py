"""Where a duckling's files live, seen by each engine.

The same object key is an ``s3://bucket/key`` URI for DuckDB, an HTTP(S) URL for ClickHouse's ``s3()``
table function, or (embedded mode) a path under a local directory for both. URLs, and the assumed role's
credentials when ClickHouse writes with them, are handed to ClickHouse as bound query parameters (sent in the
request body), never pasted into SQL text. When ClickHouse writes with its own identity, no credential is
handed over at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_duckling.access.credentials import S3Credentials
from airflow_provider_duckling.common.quoting import clickhouse_ident


@dataclass(frozen=True)
class DucklingStorage:
    """A duckling's data location: an S3 bucket (with credentials) or a local directory."""

    bucket: str
    region: str
    credentials: S3Credentials | None = None
    endpoint_url: str | None = None
    local_dir: Path | None = None
    clickhouse_identity: bool = False
    """ClickHouse reaches the bucket with its own identity: ``s3()`` gets no credential from us."""
    clickhouse_collection: str | None = None
    """With :attr:`clickhouse_identity`, the named collection holding ClickHouse's own S3 credentials."""

    @property
    def is_local(self) -> bool:
        return self.local_dir is not None

    @property
    def data_path(self) -> str:
        """The lake's DATA_PATH."""
        if self.local_dir is not None:
            return str(self.local_dir) + "/"
        return f"s3://{self.bucket}/"

    def uri(self, key: str) -> str:
        """The object as DuckDB addresses it."""
        return self.data_path + key

    def http_url(self, key: str) -> str:
        """The object as ClickHouse's ``s3()`` addresses it (path style behind a custom endpoint)."""
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{self.bucket}/{key}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{key}"

    def prepare(self, key: str) -> None:
        """Make ``key`` writable: local directories must exist before ClickHouse's ``file()`` writes."""
        if self.local_dir is not None:
            (self.local_dir / key).parent.mkdir(parents=True, exist_ok=True)

    def clickhouse_table_function(self, key: str) -> tuple[str, dict[str, Any]]:
        """``s3(...)``/``file(...)`` text for ``key`` and the parameters it binds."""
        if self.local_dir is not None:
            return "file({dest_path:String}, 'Parquet')", {"dest_path": str(self.local_dir / key)}
        params: dict[str, Any] = {"dest_url": self.http_url(key)}
        if self.clickhouse_identity:
            if self.clickhouse_collection:
                return f"s3({clickhouse_ident(self.clickhouse_collection)}, url = {{dest_url:String}}, format = 'Parquet')", params
            return "s3({dest_url:String}, 'Parquet')", params
        if self.credentials is None:
            raise ValueError(f"no credentials for s3://{self.bucket}: assume the duckling's role first")
        params.update(dest_key_id=self.credentials.key_id, dest_secret=self.credentials.secret)
        if self.credentials.session_token:
            params["dest_token"] = self.credentials.session_token
            return "s3({dest_url:String}, {dest_key_id:String}, {dest_secret:String}, {dest_token:String}, 'Parquet')", params
        return "s3({dest_url:String}, {dest_key_id:String}, {dest_secret:String}, 'Parquet')", params

    def _s3_client(self) -> Any:
        import boto3

        if self.credentials is None:
            raise ValueError(f"no credentials for s3://{self.bucket}: assume the duckling's role first")
        return boto3.client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url,
            aws_access_key_id=self.credentials.key_id, aws_secret_access_key=self.credentials.secret,
            aws_session_token=self.credentials.session_token,
        )

    def list_objects(self, prefix: str) -> Iterator[tuple[str, dt.datetime]]:
        """``(uri, last modified)`` of each object under ``prefix``, a page at a time (bounded memory)."""
        if self.local_dir is not None:
            root = self.local_dir / prefix
            for path in sorted(root.rglob("*")) if root.exists() else []:
                if path.is_file():
                    modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
                    yield self.uri(str(path.relative_to(self.local_dir))), modified
            return
        pages = self._s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                yield self.uri(item["Key"]), item["LastModified"]

    def delete(self, uris: list[str]) -> None:
        """Delete objects (as :meth:`uri` names them) of this duckling; anything outside it is refused."""
        keys = []
        for uri in uris:
            if not uri.startswith(self.data_path):
                raise ValueError(f"refusing to delete {uri!r}: not in this duckling's {self.data_path}")
            keys.append(uri[len(self.data_path):])
        if self.local_dir is not None:
            for key in keys:
                (self.local_dir / key).unlink(missing_ok=True)
            return
        client = self._s3_client()
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            answer = client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise RuntimeError(f"S3 refused to delete {len(answer['Errors'])} object(s), e.g. {first.get('Key')}: "
                                   f"{first.get('Code')}")
