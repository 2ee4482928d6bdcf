"""Is every lake right and recent: per-day tallies of both sides, freshness, reconciliation, metrics."""
