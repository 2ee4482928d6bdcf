"""No secret in a log line at any level, wherever the provider runs (tasks, the ``duckling`` command).

Two holes the registration in :mod:`~airflow_provider_duckling.common.redaction` cannot close alone:

* AWS's libraries log whole requests and responses at DEBUG — the AssumeRole call with its external id, and
  its answer with the session's secret key and token, before the provider has seen (and registered) them.
  Their loggers are held at INFO, whatever level Airflow is set to.
* Outside a task nothing masks Airflow's secrets (the ``duckling`` command): a filter on the root logger and
  its handlers replaces every registered secret, and any value of a field that carries one, with ``***``.
"""

from __future__ import annotations

import logging
import re

from airflow_provider_duckling.common.redaction import scrub

#: Libraries that log request and response payloads at DEBUG.
PAYLOAD_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "aiobotocore")

_FIELD = re.compile(
    r"(?i)(SecretAccessKey|SessionToken|ExternalId|aws_secret_access_key|aws_session_token|X-Amz-Security-Token"
    r"|password)(\W{1,6})([^\s<\"',&}]+)"
)


class SecretFilter(logging.Filter):
    """Rewrites a record whose message holds a registered secret or a secret-bearing field's value."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format itself is left to the handler
            return True
        clean = _FIELD.sub(r"\1\2***", scrub(message))
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = SecretFilter()


def guard_logging() -> None:
    """Hold the payload loggers at INFO and put :class:`SecretFilter` on the root logger and its handlers
    (idempotent: safe to call at every entry point)."""
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
    root = logging.getLogger()
    for target in (root, *root.handlers):
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
