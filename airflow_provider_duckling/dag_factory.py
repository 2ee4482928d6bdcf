"""Deprecated path, kept so that DAG files written for 0.1 still parse: the module moved to
:mod:`airflow_provider_duckling.scheduling.dag_factory`. Importing this one warns; change the DAG file's import to
the new path (docs/changelog.md)."""

from airflow_provider_duckling.common.moved import forward_module

__getattr__ = forward_module(__name__, "airflow_provider_duckling.scheduling.dag_factory")
