"""Persons: which distinct_ids a day changed, and their state as of that day's end.

ClickHouse keeps persons as versioned rows (``person`` and ``person_distinct_id2`` are ReplacingMergeTrees;
``_timestamp`` is when a version arrived). What a reader wants is the current answer per distinct_id: which
person it belongs to, with which properties. That answer changes when either table gets a new version: a
person updated or deleted, a distinct_id added, moved to another person (merges) or deleted.

A daily partition of the lake's ``persons`` table therefore holds one row per distinct_id whose answer
changed during that UTC day, stating the answer **as of the day's end**, with ``_timestamp`` = the time of
the change it reflects (always inside the day). A distinct_id that has no live person at the day's end gets
a tombstone row (``id`` and every person column NULL). The ``persons_current`` view keeps each
distinct_id's latest row and drops tombstones, so a deletion leaves the view the same day.

Cost: finding the day's changes filters the team's ``_timestamp`` column of both tables (PostHog orders
them by ``(team_id, id)`` and ``(team_id, distinct_id)``, so no key can skip it; the scan reads 4 bytes per
row and aggregates nothing) and the ``person_id`` column of the mappings; everything else — the version
aggregation, the properties, the join — reads only the changed keys, through the primary keys. The day's
state depends only on versions that arrived before its end, so re-running a day gives the same rows (until
ClickHouse merges an old version away: then a re-run of that old day can only lose rows that a later day's
partition supersedes anyway).

The full export (:class:`~airflow_provider_duckling.domain.partitions.FullExport`) is the same query without the
day: every distinct_id of the team, tombstones included, as of now. It is a new duckling's persons history;
the daily top-ups follow it.
"""

from __future__ import annotations

import datetime as dt
import re

from airflow_provider_duckling.common.quoting import clickhouse_ident

#: The day's UTC bounds, from the bound ``{day:Date}`` parameter.
_START = "toDateTime({day:Date}, 'UTC')"
_END = "toDateTime({day:Date} + 1, 'UTC')"
#: The start of the bound ``{since:Date}`` parameter's UTC day (reconciliation's window).
_SINCE = "toDateTime({since:Date}, 'UTC')"

#: The lake columns of persons, as ClickHouse expressions over the reconstructed state ``s``.
#: A row is a tombstone when ``s.live`` is false: every person column is then NULL.
COLUMN_EXPRESSIONS: dict[str, str] = {
    "team_id": "toInt64(s.team_id)",
    "distinct_id": "s.distinct_id",
    "id": "if(s.live, toString(s.person_id), NULL)",
    "properties": "if(s.live, s.properties, NULL)",
    "created_at": "if(s.live, toDateTime64(s.created_at, 6, 'UTC'), NULL)",
    "is_identified": "if(s.live, toBool(s.is_identified), NULL)",
    "person_distinct_id_version": "toInt64(s.mapping_version)",
    "person_version": "if(s.live, toUInt64(s.person_version), NULL)",
    "_timestamp": "toDateTime64(s.changed_at, 6, 'UTC')",
    "_inserted_at": "now64(6, 'UTC')",
}


def _table(database: str, name: str, alias: str) -> str:
    return f"{clickhouse_ident(database)}.{clickhouse_ident(name)} AS {alias}"


def _changed_distinct_ids(database: str, start: str, end: str | None) -> str:
    """Distinct_ids whose answer may have changed in [``start``, ``end``) (no end: up to now): a mapping
    version arrived, or a version of a person they were ever mapped to (before ``end``) did."""
    mappings = _table(database, "person_distinct_id2", "c")
    moved = _table(database, "person_distinct_id2", "cm")
    persons = _table(database, "person", "cp")
    upto_c = f" AND c._timestamp < {end}" if end else ""
    upto_cm = f" AND cm._timestamp < {end}" if end else ""
    upto_cp = f" AND cp._timestamp < {end}" if end else ""
    return (
        f"SELECT c.distinct_id FROM {mappings}\n"
        f"        WHERE c.team_id = {{team_id:Int64}} AND c._timestamp >= {start}{upto_c}\n"
        "        UNION DISTINCT\n"
        f"        SELECT cm.distinct_id FROM {moved}\n"
        f"        WHERE cm.team_id = {{team_id:Int64}}{upto_cm} AND cm.person_id IN (\n"
        f"            SELECT cp.id FROM {persons}\n"
        f"            WHERE cp.team_id = {{team_id:Int64}} AND cp._timestamp >= {start}{upto_cp})"
    )


def _state(database: str, changed_from: str | None, as_of: str | None) -> str:
    """The state SELECT: one row per distinct_id (those changed since ``changed_from``, else every one of the
    team) with its latest mapping and the latest version of the person it maps to, counting only versions
    that arrived before ``as_of`` (none: every version)."""
    cutoff_m = f" AND m._timestamp < {as_of}" if as_of else ""
    cutoff_p = f" AND q._timestamp < {as_of}" if as_of else ""
    changed = _changed_distinct_ids(database, changed_from, as_of) if changed_from else ""
    keys = f" AND m.distinct_id IN (\n        {changed})" if changed else ""
    keys_p = f" AND mp.distinct_id IN (\n            {changed})" if changed else ""
    mapping = (
        "SELECT m.team_id AS m_team_id, m.distinct_id AS m_distinct_id,\n"
        "           argMax(m.person_id, m.version) AS m_person_id, max(m.version) AS m_version,\n"
        "           argMax(m.is_deleted, m.version) AS m_is_deleted, argMax(m._timestamp, m.version) AS m_timestamp\n"
        f"    FROM {_table(database, 'person_distinct_id2', 'm')}\n"
        f"    WHERE m.team_id = {{team_id:Int64}}{cutoff_m}{keys}\n"
        "    GROUP BY m.team_id, m.distinct_id"
    )
    wanted_persons = (
        f" AND q.id IN (\n        SELECT mp.person_id FROM {_table(database, 'person_distinct_id2', 'mp')}\n"
        f"        WHERE mp.team_id = {{team_id:Int64}}{keys_p})" if changed else ""
    )
    person = (
        "SELECT q.id AS p_id, argMax(q.properties, q.version) AS p_properties,\n"
        "           argMax(q.is_identified, q.version) AS p_is_identified, argMax(q.created_at, q.version) AS p_created_at,\n"
        "           max(q.version) AS p_version, argMax(q.is_deleted, q.version) AS p_is_deleted,\n"
        "           argMax(q._timestamp, q.version) AS p_timestamp, 1 AS p_present\n"
        f"    FROM {_table(database, 'person', 'q')}\n"
        f"    WHERE q.team_id = {{team_id:Int64}}{cutoff_p}{wanted_persons}\n"
        "    GROUP BY q.id"
    )
    return (
        "SELECT pd.m_team_id AS team_id, pd.m_distinct_id AS distinct_id, pd.m_person_id AS person_id,\n"
        "           pd.m_version AS mapping_version,\n"
        "           (pd.m_is_deleted = 0 AND p.p_present = 1 AND p.p_is_deleted = 0) AS live,\n"
        "           p.p_properties AS properties, p.p_is_identified AS is_identified, p.p_created_at AS created_at,\n"
        "           p.p_version AS person_version,\n"
        "           greatest(pd.m_timestamp, if(p.p_present = 1, p.p_timestamp, pd.m_timestamp)) AS changed_at\n"
        f"    FROM ({mapping}) AS pd\n"
        f"    LEFT JOIN ({person}) AS p ON p.p_id = pd.m_person_id"
    )


def state_source(database: str, daily: bool) -> str:
    """``FROM … WHERE …`` giving ``s``: one row per distinct_id (of the day's changes, or of the whole team)
    with its latest mapping and the latest version of the person it maps to, as of the day's end.

    Versions are picked with ``argMax(…, version)`` (FINAL's answer, without depending on merges). Every
    stored column is qualified and every aggregate has a name no column has, so no setting that changes how
    names resolve can change the answer.
    """
    if not daily:
        return f"FROM (\n    {_state(database, None, None)}\n) AS s"
    return (f"FROM (\n    {_state(database, _START, _END)}\n) AS s"
            f"\nWHERE s.changed_at >= {_START} AND s.changed_at < {_END}")


def changed_since_source(database: str) -> str:
    """``FROM …`` giving ``s``: the **current** answer of every distinct_id whose answer may have changed
    since the start of ``{since:Date}`` (UTC). Only the latest versions count, which merges never remove:
    what reconciliation compares (:mod:`airflow_provider_duckling.health.reconcile`)."""
    return f"FROM (\n    {_state(database, _SINCE, None)}\n) AS s"


# ---------------------------------------------------------------- the baseline: the team's full export

_AS_OF = re.compile(r"-asof(\d{8}T\d{6}Z)")


def as_of_token(token: str, as_of: dt.datetime) -> str:
    """The run token of a full export whose state includes every version that arrived by ``as_of``: the
    lake's catalog then records it in the file's path."""
    return f"{token}-asof{as_of.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"


def newest_version_sql(database: str) -> str:
    """When the newest person or mapping version of the team arrived (``_timestamp``; 0 without any)."""
    return (
        f"SELECT toUnixTimestamp(greatest((SELECT max(a._timestamp) FROM {_table(database, 'person', 'a')} "
        "WHERE a.team_id = {team_id:Int64}), "
        f"(SELECT max(b._timestamp) FROM {_table(database, 'person_distinct_id2', 'b')} "
        "WHERE b.team_id = {team_id:Int64})))"
    )


def full_export_as_of(newest_version: object, now: dt.datetime) -> dt.datetime:
    """What a full export read before ``now`` is known to include: every version up to the newest one that
    had arrived (``newest_version``, epoch seconds; versions arrive in ``_timestamp`` order), and never
    later than the clock."""
    seconds = int(str(newest_version or 0))
    return min(dt.datetime.fromtimestamp(max(seconds, 0), dt.UTC), now)


def exported_as_of(uris: list[str] | tuple[str, ...]) -> dt.datetime | None:
    """The as-of time a full export wrote into its files' names; ``None`` when none carries one."""
    times = []
    for uri in uris:
        match = _AS_OF.search(uri.rsplit("/", 1)[-1])
        if match:
            times.append(dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC))
    return min(times, default=None)


_COMMENT = re.compile(r"full export as of (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)")


def baseline_comment(as_of: dt.datetime) -> str:
    """The persons table's comment, set in the transaction that registers the team's full export: it survives
    file merges and snapshot expiry, and goes with the table (``delete_tables``)."""
    return (f"One row per distinct_id and change; query posthog.persons_current for the current answer. "
            f"Team's full export as of {as_of.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ} (airflow-provider-duckling).")


def baseline_time(comment: str | None) -> dt.datetime | None:
    """When the state of the team's full export was read, from the persons table's comment; ``None`` without
    one (a new duckling, a reset table, or a lake filled by an earlier release)."""
    match = _COMMENT.search(comment or "")
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def covered_by_baseline(day: dt.date, baseline: dt.datetime, settle: dt.timedelta) -> bool:
    """Whether the full export includes every version of ``day`` (it read versions that arrived ``settle``
    after the day ended): the day's top-up would only write rows that the full export's supersede."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC) + settle <= baseline
