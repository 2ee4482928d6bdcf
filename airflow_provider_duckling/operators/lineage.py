"""OpenLineage for the two operators: ClickHouse table → S3 objects → DuckLake table.

Imported lazily by the operators (``get_openlineage_facets_on_complete``): the OpenLineage provider is
optional (``pip install airflow-provider-duckling[openlineage]``), and nothing here runs without it.
Namespaces follow OpenLineage's naming: ``clickhouse://host:port`` for ClickHouse, ``s3://bucket`` (or
``file`` in embedded mode) for objects, and ``postgres://host:port`` with name ``db.schema.table`` for the
DuckLake table, since the catalog is what names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_duckling.domain.tables import LAKE_SCHEMA, TableSpec


@dataclass(frozen=True)
class LineageFacts:
    """What a finished task knows about what it read and wrote."""

    inputs: list[tuple[str, str]]
    outputs: list[tuple[str, str]]
    table: TableSpec
    rows: int | None = None
    bytes: int | None = None
    files: int | None = None


def clickhouse_dataset(host: str | None, port: int | None, database: str, table: str) -> tuple[str, str]:
    namespace = f"clickhouse://{host}:{port or 8123}" if host else "clickhouse://embedded"
    return namespace, f"{database}.{table}"


def object_dataset(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (``s3://bucket``, ``key``); a local path → (``file``, path)."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        return f"s3://{bucket}", key
    return "file", uri


def lake_dataset(db_host: str, db_port: int | None, db_name: str, table: str) -> tuple[str, str]:
    return f"postgres://{db_host}:{db_port or 5432}", f"{db_name}.{LAKE_SCHEMA}.{table}"


def operator_lineage(facts: LineageFacts) -> Any:
    """The :class:`OperatorLineage` for ``facts`` (requires the OpenLineage provider)."""
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    schema = SchemaDatasetFacet(
        fields=[SchemaDatasetFacetFields(name=c.name, type=c.lake_type) for c in facts.table.columns]
    )
    inputs = [Dataset(namespace=ns, name=name) for ns, name in facts.inputs]
    outputs = []
    for ns, name in facts.outputs:
        facets: dict[str, Any] = {"schema": schema}
        if facts.rows is not None:
            facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(
                rowCount=facts.rows, size=facts.bytes, fileCount=facts.files,
            )
        outputs.append(Dataset(namespace=ns, name=name, facets=facets))
    return OperatorLineage(inputs=inputs, outputs=outputs)
