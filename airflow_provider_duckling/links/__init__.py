"""Airflow operator extra links: the "Exported objects" link."""
