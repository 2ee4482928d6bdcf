"""The main job on embedded engines (``python -m airflow_provider_duckling.demo``) and its sample data."""
