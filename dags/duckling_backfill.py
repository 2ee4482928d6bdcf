"""Generates ``duckling_{table}_backfill_team_{team_id}`` DAGs from the duckling registry.

For thousands of teams, shard: replace this file by copies named ``duckling_backfill_shard_K_of_N.py``
(K = 0 … N-1); each builds the teams with ``team_id % N == K``.
"""

from airflow_provider_duckling.scheduling.dag_factory import build_dags

globals().update(build_dags(dag_file=__file__))
