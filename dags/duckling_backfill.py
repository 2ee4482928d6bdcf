"""Generates ``duckling_{table}_backfill_team_{team_id}`` DAGs from the duckling registry."""

from airflow_provider_duckling.dag_factory import build_dags

globals().update(build_dags())
