"""The DAGs: per-team DAGs from the registry, the operations DAGs, the DAG files, discovery, priority, the late-events wait, the export pool."""
