"""``duckling setup``: the one-time, per-installation step — the pool that bounds concurrent exports."""

from __future__ import annotations

import argparse

from rich.console import Console


def run(args: argparse.Namespace, out: Console) -> int:
    """Create or resize the export pool; idempotent."""
    from airflow_provider_duckling.scheduling.pools import ensure_export_pool

    name, slots = ensure_export_pool(args.export_slots)
    out.print(f"Export pool {name}: {slots} slots (at most {slots} exports run against ClickHouse at once; "
              "top-ups are ranked ahead of history).", markup=False, highlight=False)
    return 0
