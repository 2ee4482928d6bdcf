"""One clear line when Airflow refuses a duckling run's options at trigger time.

Airflow's API answers an option that fails its JSON schema with jsonschema's whole report (the schema and
the value over a dozen lines); its trigger form shows that at the top of the dialog, out of view, beside
a "Bad Request" toast. The form cannot check a ``pattern`` while the user types (Airflow 3.3's form
knows enums, examples, formats and lengths, not patterns), so the refusal comes at submit. This
api-server middleware (registered by the provider's plugin) keeps the refusal — no run, nothing written —
and, for the provider's DAGs only, replaces the report with one line naming the option, the value and
the expected form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow_provider_duckling.common.errors import quoted

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

#: The trigger endpoint of a provider DAG.
TRIGGER_PATH = re.compile(r"/api/v2/dags/duckling_[A-Za-z0-9_.-]+/dagRuns$")
#: What Airflow says when a param fails its schema: ``Invalid input for param NAME: <jsonschema report>``.
PARAM_ERROR = re.compile(r"Invalid input for param (?P<name>[A-Za-z0-9_]+): (?P<report>.*)", re.S)
#: jsonschema's report ends with the offending value: ``On instance:\n    '300-2024-05-01'``.
INSTANCE = re.compile(r"On instance:\s*(?P<value>.+?)\s*$", re.S)

#: Option → (its title in the form, the form its value must take).
EXPECTED = {"partition_key": ("Partition", "{team_id}_{YYYY-MM-DD} (e.g. 12345_2024-01-15)")}


def one_line(detail: str) -> str | None:
    """The one-line form of Airflow's param refusal, or ``None`` when ``detail`` is something else."""
    match = PARAM_ERROR.match(detail)
    if match is None:
        return None
    name, report = match["name"], match["report"]
    instance = INSTANCE.search(report)
    value = quoted(instance["value"].strip().strip("'\""), 40) if instance else None
    if name in EXPECTED:
        title, form = EXPECTED[name]
        return f"{title} {value or 'value'} is not {form}; nothing was triggered"
    first = report.strip().splitlines()[0] if report.strip() else "invalid value"
    return f"{name}: {first[:200]}; nothing was triggered"


class TriggerErrorMiddleware:
    """ASGI middleware: rewrites the 400 answer of a provider DAG's trigger endpoint to :func:`one_line`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" or not TRIGGER_PATH.search(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] != 400:
                    await send(message)
                else:
                    start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                body = _rewritten(b"".join(chunks))
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


def _rewritten(body: bytes) -> bytes:
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    detail = payload.get("detail") if isinstance(payload, dict) else None
    line = one_line(detail) if isinstance(detail, str) else None
    return body if line is None else json.dumps({**payload, "detail": line}).encode()


#: For :class:`~airflow_provider_duckling.plugins.duckling.DucklingPlugin`'s ``fastapi_root_middlewares``.
MIDDLEWARE = {"middleware": TriggerErrorMiddleware, "args": [], "kwargs": {}, "name": "duckling trigger errors"}
