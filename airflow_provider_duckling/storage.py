"""Where a duckling's files live, seen by each engine.

The same object key is an ``s3://bucket/key`` URI for DuckDB, an HTTP(S) URL for ClickHouse's ``s3()``
table function, or (embedded mode) a path under a local directory for both. Credentials and URLs are
handed to ClickHouse as bound query parameters, never pasted into SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_duckling.credentials import S3Credentials


@dataclass(frozen=True)
class DucklingStorage:
    """A duckling's data location: an S3 bucket (with credentials) or a local directory."""

    bucket: str
    region: str
    credentials: S3Credentials | None = None
    endpoint_url: str | None = None
    local_dir: Path | None = None

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
        if self.credentials is None:
            raise ValueError(f"no credentials for s3://{self.bucket}: assume the duckling's role first")
        params.update(dest_key_id=self.credentials.key_id, dest_secret=self.credentials.secret)
        if self.credentials.session_token:
            params["dest_token"] = self.credentials.session_token
            return "s3({dest_url:String}, {dest_key_id:String}, {dest_secret:String}, {dest_token:String}, 'Parquet')", params
        return "s3({dest_url:String}, {dest_key_id:String}, {dest_secret:String}, 'Parquet')", params
