"""The operations DAGs: the freshness check and the self-healing reconciliation.

* ``duckling_freshness_check`` (hourly): per team and table, the newest day held, the lag behind the last
  closed day and the failed days, sent as metrics (:mod:`~airflow_provider_duckling.health.metrics`); the task
  fails, listing them, when a table of an unpaused duckling lags more than ``[duckling]
  freshness_max_lag_days``, so Airflow's own alerting (and the ``failure_notifier``) fires. A duckling within
  ``[duckling] onboarding_grace_hours`` of being first seen by discovery (or not seen yet) is only reported as
  onboarding: its first top-up has not had its chance, and a run of it that fails is reported by that run.
* ``duckling_reconcile`` (daily): compares the last ``[duckling] reconcile_days`` closed days of every team
  and table, ClickHouse against the lake (:mod:`~airflow_provider_duckling.health.reconcile`), re-runs each
  differing day once, and reports what it found and what earlier repairs fixed (task output and metrics).
* ``duckling_history_check`` (weekly, ``[duckling] history_check_schedule``): compares the event count of
  every older day of every team, ClickHouse against the lake's per-file statistics
  (:mod:`~airflow_provider_duckling.health.history_check`), and re-moves the differing days, at most
  ``[duckling] history_check_max_days`` per team per pass, each day once a week.

Parsing reads nothing but the settings: no registry, lake or ClickHouse.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import DAG, get_parsing_context, task

from airflow_provider_duckling.registry import settings
from airflow_provider_duckling.scheduling.dag_factory import housekeeping_dag

log = logging.getLogger(__name__)

FRESHNESS_DAG_ID = "duckling_freshness_check"
RECONCILE_DAG_ID = "duckling_reconcile"
HISTORY_CHECK_DAG_ID = "duckling_history_check"


def _ops_dag(dag_id: str, cron: str, description: str) -> DAG:
    """A housekeeping DAG without retries (the failure is the report), the failure notifier on."""
    return housekeeping_dag(dag_id, cron, description, retries=0, tags=("duckling", "operations"), doc_md=__doc__)


def _registry_inputs() -> Any:
    """The registry and the remembered start dates, as the team DAGs see them; a broken registry fails the task."""
    from airflow_provider_duckling.registry.state import load_dag_inputs

    inputs = load_dag_inputs()
    if inputs.problems:
        raise RuntimeError("duckling registry problem: " + "; ".join(inputs.problems))
    return inputs


def build_freshness_dag() -> DAG:
    """Hourly: freshness metrics for every team and table; fails while a table lags too far."""
    with _ops_dag(FRESHNESS_DAG_ID, "45 * * * *",
                  "Freshness of every duckling (metrics); fails while a table lags past freshness_max_lag_days") as dag:

        @task(task_id="check_freshness")
        def check_freshness() -> dict[str, Any]:
            from airflow_provider_duckling.health import freshness, metrics

            inputs = _registry_inputs()
            report, problems = freshness.collect(inputs.ducklings, inputs.start_dates, dt.datetime.now(dt.UTC),
                                                 inputs.first_seen)
            metrics.freshness(report)
            for line in problems:
                log.warning("event=freshness_lake_unreadable %s", line)
            for item in report:
                log.info("event=freshness team=%d table=%s latest_day=%s lag_days=%s failed_days=%d onboarding=%s",
                         item.team_id, item.table, item.latest_day, item.lag_days, len(item.failed_days),
                         item.onboarding)
            onboarding = [freshness.describe(f) for f in freshness.onboarding(report)]
            if onboarding:  # new ducklings: not judged until their first top-up has had its chance
                log.info("event=freshness_onboarding tables=%d not judged yet: %s", len(onboarding), "; ".join(onboarding))
            max_lag = settings.freshness_max_lag_days()
            late = [f for f in freshness.lagging(report, max_lag) if not inputs.ducklings[f.team_id].paused]
            if late:
                raise RuntimeError(f"{len(late)} duckling table(s) lag more than {max_lag} day(s): "
                                   + "; ".join(freshness.describe(f) for f in late))
            return {"max_lag_days": max_lag, "tables": [f.as_dict() for f in report], "unreadable": problems,
                    "onboarding": onboarding}

        check_freshness()
    return dag


def build_reconcile_dag() -> DAG:
    """Daily: compare source and lake over the last closed days; re-run each differing day once."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    with _ops_dag(RECONCILE_DAG_ID, "0 6 * * *",
                  "Compares ClickHouse with each duckling over the last reconcile_days days and re-runs days that differ") as dag:

        @task(task_id="compare")
        def compare() -> dict[str, Any]:
            from airflow_provider_duckling.health import metrics
            from airflow_provider_duckling.health.freshness import last_closed_day
            from airflow_provider_duckling.health.reconcile import reconcile, trigger_arguments, window

            inputs = _registry_inputs()
            days = window(last_closed_day(dt.datetime.now(dt.UTC), settings.settle_delay()), settings.reconcile_days())
            findings = reconcile(inputs.ducklings, inputs.start_dates, days)
            metrics.reconciliation(findings.compared, findings.reruns)
            report = findings.as_dict()
            log.info("event=reconcile days=%s..%s compared=%d differing=%d reruns=%d fixed=%d unresolved=%d skipped=%d",
                     days[0], days[-1], report["compared_days"], len(report["differing"]), len(report["reruns"]),
                     len(report["fixed"]), len(report["unresolved"]), len(report["skipped"]))
            for line in findings.skipped:
                log.info("event=reconcile_skipped %s", line)
            for item in findings.unresolved:
                log.warning("event=reconcile_unresolved %s (its repair run already ran)", item.describe())
            report["trigger"] = trigger_arguments(findings.reruns)
            return report

        @task(task_id="repair_runs")
        def repair_runs(report: dict[str, Any]) -> list[dict[str, Any]]:
            return list(report["trigger"])

        TriggerDagRunOperator.partial(task_id="rerun", skip_when_already_exists=True).expand_kwargs(
            repair_runs(compare()))
    return dag


def build_history_check_dag() -> DAG:
    """Weekly: every older day's event count, ClickHouse against the lake; re-move the days that differ."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    with _ops_dag(HISTORY_CHECK_DAG_ID, settings.history_check_schedule(),
                  "Compares every day of each team's events history with ClickHouse and re-moves the days that differ") as dag:

        @task(task_id="compare")
        def compare() -> dict[str, Any]:
            from airflow_provider_duckling.health.freshness import last_closed_day
            from airflow_provider_duckling.health.history_check import (
                history_check,
                team_plans,
                trigger_arguments,
            )

            inputs = _registry_inputs()
            now = dt.datetime.now(dt.UTC)
            # The last reconcile_days days are the daily reconciliation's.
            last = last_closed_day(now, settings.settle_delay()) - dt.timedelta(days=settings.reconcile_days())
            findings = history_check(inputs.ducklings, team_plans(inputs, now.date()), last, now,
                                     settings.history_check_max_days())
            log.info(findings.summary())
            for line in findings.skipped:
                log.info("event=history_check_skipped %s", line)
            report = findings.as_dict()
            report["last_day"] = last.isoformat()
            report["trigger"] = trigger_arguments(findings.reruns, findings.week)
            return report

        @task(task_id="rerun_days")
        def rerun_days(report: dict[str, Any]) -> list[dict[str, Any]]:
            return list(report["trigger"])

        TriggerDagRunOperator.partial(task_id="rerun", skip_when_already_exists=True).expand_kwargs(
            rerun_days(compare()))
    return dag


def build_ops_dags() -> dict[str, DAG]:
    """The operations DAGs, or only the one a task runner asked for."""
    wanted = get_parsing_context().dag_id
    builders = {FRESHNESS_DAG_ID: build_freshness_dag, RECONCILE_DAG_ID: build_reconcile_dag,
                HISTORY_CHECK_DAG_ID: build_history_check_dag}
    return {dag_id: build() for dag_id, build in builders.items() if not wanted or wanted == dag_id}
