"""The ``duckling`` command: day-to-day operations on the ducklings, for people.

``duckling setup`` · ``duckling catalog add|list|validate|pause|resume`` · ``duckling status`` ·
``duckling verify`` · ``duckling run`` · ``duckling discover``; ``--json`` wherever a table is printed.
Entry point: :func:`airflow_provider_duckling.cli.main.main`.
"""
