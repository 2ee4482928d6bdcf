"""Keep secrets out of logs and error messages.

Every secret value the provider handles (catalog passwords, S3 keys, session tokens, external ids) is
registered here. Registration also tells Airflow's own secrets masker, so task logs redact the value
even if some library prints it; :func:`scrub` removes them from exception text we re-raise.
"""

from __future__ import annotations

import threading

_MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember ``value`` as secret (ignores empty and very short values that would mask noise)."""
    if not value or len(value) < 4:
        return
    with _lock:
        _secrets.add(value)
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        try:
            from airflow.sdk.execution_time.secrets_masker import mask_secret
        except ImportError:
            return
    mask_secret(value)


def scrub(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***`` (longest first)."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, _MASK)
    return text


def scrubbed_message(exc: BaseException) -> str:
    """A one-line, secret-free description of ``exc``."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {first_line}")
