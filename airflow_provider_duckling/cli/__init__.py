"""The ``duckling`` command: day-to-day operations on the ducklings, for people.

``duckling catalog add|list|validate`` · ``duckling status`` · ``duckling verify`` · ``duckling run``.
Entry point: :func:`airflow_provider_duckling.cli.main.main`.
"""
