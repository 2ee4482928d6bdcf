"""The Airflow Asset each duckling table is, and the event a registered partition emits.

Downstream DAGs schedule on a team's fresh data with ``schedule=[duckling_asset(12345, "events")]``; each
event carries the partition key ``{team_id}_{YYYY-MM-DD}`` (``{team_id}_full`` for a persons full export)
and, in its extra, what was registered: rows, bytes, files and the lake snapshot id.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset


def duckling_asset(team_id: int, table: str) -> Asset:
    """The asset of one duckling table (stable across catalog moves: named by team and table)."""
    return Asset(
        name=f"duckling_team_{int(team_id)}_{table}",
        uri=f"ducklake://team-{int(team_id)}/posthog/{table}",
        group="duckling",
        extra={"team_id": int(team_id), "table": table},
    )


def asset_event_extra(rows: int, bytes_: int, files: int, snapshot_id: int | None) -> dict[str, Any]:
    """The extra every registration event carries."""
    return {"rows": int(rows), "bytes": int(bytes_), "files": int(files), "snapshot_id": snapshot_id}


def batch_event_extra(day_extra: dict[str, Any], batch_key: str, days: int) -> dict[str, Any]:
    """The extra of each day's event of a batch: Airflow attaches one extra to all the partition keys of a
    task's event, so it names the batch and its totals, and leaves the per-day figures null rather than
    give every day the batch's."""
    return {"rows": None, "bytes": None, "files": None, "snapshot_id": day_extra["snapshot_id"], "batch": batch_key,
            "batch_days": int(days), "batch_rows": day_extra["rows"], "batch_bytes": day_extra["bytes"],
            "batch_files": day_extra["files"]}


def publish_partition(context: Any, outlets: list[Any], partition_key: str | list[str], extra: dict[str, Any]) -> int:
    """Attach ``partition_key`` (several: one event per key, for a batch of days) and ``extra`` to the
    event of each Asset outlet; returns how many outlets."""
    published = 0
    for outlet in outlets:
        if isinstance(outlet, Asset):
            accessor = context["outlet_events"][outlet]
            accessor.extra = dict(extra)
            accessor.add_partitions(partition_key if isinstance(partition_key, list) else [partition_key])
            published += 1
    return published
