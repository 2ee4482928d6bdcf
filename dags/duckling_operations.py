"""The operations DAGs: ``duckling_freshness_check`` (freshness metrics, fails while a team lags) and
``duckling_reconcile`` (compares ClickHouse with the lakes and re-runs the days that differ)."""

from airflow_provider_duckling.scheduling.ops_dags import build_ops_dags

globals().update(build_ops_dags())
