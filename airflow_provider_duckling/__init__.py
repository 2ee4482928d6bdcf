"""Airflow provider that back-fills ClickHouse data into per-customer DuckLake lakes ("ducklings")."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-duckling",
        "name": "Duckling",
        "description": "Back-fill ClickHouse events and persons into per-customer DuckLake lakes.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "clickhouse",
                "hook-class-name": "airflow_provider_duckling.hooks.clickhouse.ClickHouseHook",
            },
            {
                "connection-type": "ducklake",
                "hook-class-name": "airflow_provider_duckling.hooks.ducklake.DuckLakeHook",
            },
        ],
        "hook-class-names": [
            "airflow_provider_duckling.hooks.clickhouse.ClickHouseHook",
            "airflow_provider_duckling.hooks.ducklake.DuckLakeHook",
        ],
    }
