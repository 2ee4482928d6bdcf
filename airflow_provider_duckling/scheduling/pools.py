"""The export pool: at most ``[duckling] export_pool_slots`` exports run against ClickHouse at once.

A pool lives in Airflow's metadata database, which DAG files and tasks may not touch in Airflow 3, so it
is created by an operator's one-time setup (``duckling setup``, the compose stack's init, the tests), not
at parse time.
"""

from __future__ import annotations

from airflow_provider_duckling.registry import settings

DESCRIPTION = "airflow-provider-duckling: exports running against ClickHouse at once (top-ups ahead of history)"


def ensure_export_pool(slots: int | None = None) -> tuple[str, int]:
    """Create or resize the export pool in the metadata DB; returns (name, slots)."""
    from airflow.models.pool import Pool

    name, slots = settings.export_pool(), slots or settings.export_pool_slots()
    Pool.create_or_update_pool(name, slots, DESCRIPTION, include_deferred=False)
    return name, slots
