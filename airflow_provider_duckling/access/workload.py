"""Naming an export attempt's ClickHouse statements, so that ClickHouse can account for them and cancel them.

Every statement an export attempt sends (the row count, the ``INSERT INTO FUNCTION s3()``, the footer
read-back, the persons as-of query) carries

* a ``query_id`` unique to the attempt and the statement: ``duckling-{team}-{table}-{day|full}-try{N}-
  {12 hex}-{seq}-{step}``; the hex part is new for every attempt object, so a retry, a clear or a second
  worker never reuses an id (ClickHouse refuses a second running query with the same id);
* a ``log_comment``: compact JSON naming team, table, partition, day, DAG, run, try and step, which
  ``system.query_log`` keeps per statement (``JSONExtractInt(log_comment, 'team_id')``).

The query id is what ``on_kill`` names in ``KILL QUERY WHERE query_id = …``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

#: ``log_comment``'s ``app`` value: what selects this provider's statements in ``system.query_log``.
APP = "airflow-provider-duckling"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Attempt:
    """One try of one export task: who its ClickHouse statements are for."""

    team_id: int
    table: str
    partition: str  # the scope's key: ``{team}_{YYYY-MM-DD}`` or ``{team}_full``
    dag_id: str = ""
    run_id: str = ""
    try_number: int = 0
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def day(self) -> str | None:
        """The UTC day, or ``None`` for a full export."""
        tail = self.partition.rsplit("_", 1)[-1]
        return None if tail == "full" else tail

    @property
    def query_id_prefix(self) -> str:
        """What every query id of this attempt starts with."""
        day = (self.day or "full").replace("-", "")
        table = _UNSAFE.sub("_", self.table)
        return f"duckling-{int(self.team_id)}-{table}-{day}-try{int(self.try_number)}-{self.nonce}"

    def query_id(self, sequence: int, step: str) -> str:
        """The id of the attempt's ``sequence``-th statement, a ``step`` such as ``count`` or ``export``."""
        return f"{self.query_id_prefix}-{sequence:02d}-{_UNSAFE.sub('_', step)}"

    def log_comment(self, step: str) -> str:
        """The statement's ``log_comment``: JSON, for ``system.query_log``."""
        return json.dumps(
            {"app": APP, "team_id": int(self.team_id), "table": self.table, "partition": self.partition,
             "day": self.day, "dag_id": self.dag_id, "run_id": self.run_id, "try": int(self.try_number),
             "step": step},
            separators=(",", ":"), ensure_ascii=True,
        )


def timeout_advice(what: str) -> str:
    """What to do when ClickHouse ran out of time for ``what`` (the same query would run as long again)."""
    return (
        f"{what} is not retried: the same query would run as long again. Raise max_execution_time in the run's "
        "clickhouse_settings (e.g. {\"max_execution_time\": 7200}; the clickhouse connection's send_receive_timeout "
        "must be at least as long), give it more threads (max_threads), or re-run the day later when ClickHouse "
        "is less busy (clear the task, or duckling run)"
    )
