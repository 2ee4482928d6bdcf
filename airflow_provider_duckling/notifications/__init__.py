"""Airflow notifiers: the failure notifier named in ``[duckling] failure_notifier``."""
