"""Airflow Assets: one per duckling table, and the event a registered partition emits (:mod:`.ducklake`).

``from airflow_provider_duckling.assets import duckling_asset`` is what downstream DAGs write.
"""

from airflow_provider_duckling.assets.ducklake import duckling_asset

__all__ = ["duckling_asset"]
