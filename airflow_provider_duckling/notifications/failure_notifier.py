"""The failure callback of the project's tasks: an Airflow notifier named in ``[duckling] failure_notifier``.

``failure_notifier = package.module.NotifierClass`` (a subclass of ``airflow.sdk.BaseNotifier``, e.g. the
Slack or SMTP provider's notifier, or your own) and optionally ``failure_notifier_kwargs = {"…": …}`` (one
JSON object). The class is imported and instantiated once per parse, and set as ``on_failure_callback`` of
every task of the team DAGs and of the operations DAGs; Airflow calls it in the worker when a task fails
for good (after its retries) with the task's context: ``dag``, ``ti``, ``task`` (whose ``team_id`` names
the team), ``params``, ``exception``.

A setting that cannot be used — not a dotted path, no such module or class, not a notifier, arguments the
class refuses — fails the parse with one line naming the setting, so no DAG runs without its alerting.
Nothing is sent while parsing.
"""

from __future__ import annotations

import functools
import importlib
import json
from typing import Any

from airflow_provider_duckling.common.errors import ConfigurationError, quoted
from airflow_provider_duckling.registry import settings


def failure_notifier() -> Any | None:
    """The configured notifier instance, or None when ``[duckling] failure_notifier`` is empty."""
    path = settings.failure_notifier_path()
    if path is None:
        return None
    kwargs = settings.failure_notifier_kwargs()
    return _instantiate(path, json.dumps(kwargs, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _instantiate(path: str, kwargs_json: str) -> Any:
    """One instance per setting and process: every DAG of a parse shares it."""
    from airflow.sdk import BaseNotifier

    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - missing, or failing while it imports: one line either way
        raise ConfigurationError(
            f"[duckling] failure_notifier: cannot import module {quoted(module_name)} ({type(exc).__name__})") from None
    notifier_class = getattr(module, class_name, None)
    if not isinstance(notifier_class, type) or not issubclass(notifier_class, BaseNotifier):
        raise ConfigurationError(
            f"[duckling] failure_notifier: {quoted(path)} is not a notifier class (a subclass of airflow.sdk.BaseNotifier)")
    try:
        return notifier_class(**json.loads(kwargs_json))
    except Exception as exc:  # noqa: BLE001 - the class's own refusal, reported as one line
        raise ConfigurationError(
            f"[duckling] failure_notifier_kwargs: {class_name} refused them ({type(exc).__name__})") from None


def callback_args() -> dict[str, Any]:
    """``{"on_failure_callback": notifier}`` for ``default_args``, or ``{}`` without a notifier."""
    notifier = failure_notifier()
    return {"on_failure_callback": notifier} if notifier is not None else {}
