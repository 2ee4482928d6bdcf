"""One team-day of events, read the way the export reads it: only the day's granules, the same rows whatever
the settings say, and exact next to pre-1970 and after-2149 rows in the same data part.

Real ClickHouse (chdb behind its HTTP interface, reached with clickhouse-connect), moto S3. The tables live in
their own database (``pruning``) with a small ``index_granularity``, so that granule counts mean something:
a team with 1,100 days of history, a team holding only the measured day, neighbours on both sides, and the
edge rows (1969-12-31 23:59:59, 2150-01-01) merged into one part with ordinary days.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_duckling.access.storage import DucklingStorage
from airflow_provider_duckling.common.errors import ConfigurationError, TransientError
from airflow_provider_duckling.demo.sample_data import (
    clickhouse_day_counts,
    insert_event_at,
    insert_events,
    schema_statements,
)
from airflow_provider_duckling.domain.partitions import Partition
from airflow_provider_duckling.domain.tables import EVENTS, export_select
from airflow_provider_duckling.hooks.clickhouse import ClickHouseError, ClickHouseHook, ClickHouseQueryError
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from airflow_provider_duckling.scheduling.airflow_env import connection_env
from airflow_provider_duckling.scheduling.discovery import discover_start_dates
from airflow_provider_duckling.transfer.export import (
    ROW_SETTINGS,
    RowCountMismatchError,
    count_partition_rows,
    export_partition,
    export_statement,
    merged_settings,
    settings_clause,
)
from tests.support.stack import CLICKHOUSE_PASSWORD, DAYS

DB = "pruning"
CONN_ID = "clickhouse_pruning"
GRANULARITY = 256
FIRST, HISTORY_DAYS, ROWS = dt.date(2021, 1, 1), 1100, 300
DAY = FIRST + dt.timedelta(days=500)  # inside the history
HISTORY_TEAM, SINGLE_TEAM, NEIGHBOURS = 700, 701, (699, 702)
EDGE_TEAM, EDGE_ONLY_TEAM, LATE_TEAM = 710, 711, 720
EPOCH, WRAP_DAY, LATE_DAY = dt.date(1970, 1, 1), dt.date(1970, 7, 28), dt.date(2024, 1, 4)
FAR_FUTURE = dt.date(2150, 1, 1)
EDGE_DAYS = {EPOCH: 50, WRAP_DAY: 4, LATE_DAY: 300}  # WRAP_DAY: where toDate() puts 2150-01-01

#: The predicate the export used before: bare names, bound to the SELECT's own aliases by default.
OLD_WHERE = ("WHERE team_id = {team_id:Int64}\n  AND toDate(timestamp) = {day:Date}\n"
             "  AND timestamp >= toDateTime64('1970-01-01 00:00:00', 6, 'UTC')")


@pytest.fixture(scope="module")
def source(stack) -> Iterator[ClickHouseHook]:
    """The ``pruning`` database, seeded (one INSERT … SELECT per team) and merged into one part."""
    name, value = connection_env(CONN_ID, "clickhouse", host="127.0.0.1", port=stack.clickhouse_port,
                                 login="default", password=CLICKHOUSE_PASSWORD, schema=DB)
    os.environ[name] = value
    hook = ClickHouseHook(CONN_ID)
    for statement in schema_statements(DB):
        if statement.split("(", 1)[0].rstrip().endswith(".events"):
            statement += f"\nSETTINGS index_granularity = {GRANULARITY}"
        hook.execute(statement)
    insert_events(hook, HISTORY_TEAM, FIRST, ROWS, days=HISTORY_DAYS)
    insert_events(hook, SINGLE_TEAM, DAY, ROWS)
    for team in NEIGHBOURS:
        insert_events(hook, team, FIRST, 100, days=HISTORY_DAYS)
    for day, rows in EDGE_DAYS.items():
        insert_events(hook, EDGE_TEAM, day, rows)
    insert_event_at(hook, EDGE_TEAM, "1969-12-31 23:59:59", 3)
    insert_event_at(hook, EDGE_TEAM, "2150-01-01 00:00:00", 2)
    insert_events(hook, EDGE_ONLY_TEAM, LATE_DAY, 20)
    insert_event_at(hook, EDGE_ONLY_TEAM, "1969-12-31 23:59:59.999999", 1)
    insert_event_at(hook, EDGE_ONLY_TEAM, "2150-01-01 00:00:00", 1)
    insert_events(hook, LATE_TEAM, LATE_DAY, 40)
    hook.execute(f"OPTIMIZE TABLE {DB}.events FINAL")
    yield hook
    os.environ.pop(name, None)


@pytest.fixture(scope="module")
def storage(stack) -> DucklingStorage:
    """A duckling bucket to export into (the exports here are never registered)."""
    return DuckLakeHook().storage(stack.new_duckling(HISTORY_TEAM, "pruning"))


def _explain_granules(hook: ClickHouseHook, select: str, params: dict[str, Any]) -> tuple[int, int]:
    """(granules selected, granules in the table) from ClickHouse's own ``EXPLAIN indexes = 1``."""
    text = "\n".join(str(row[0]) for row in hook.query_rows(f"EXPLAIN indexes = 1\n{select}", params))
    selected, total = re.findall(r"Granules: (\d+)/(\d+)", text)[-1]  # after the last index applied
    return int(selected), int(total)


def _granules(hook: ClickHouseHook, team: int, day: dt.date | None = None) -> int:
    """Granules that hold rows of ``team`` (on ``day``), counted from the rows themselves."""
    where, params = "team_id = {team:Int64}", {"team": team}
    if day is not None:
        where, params = where + " AND toDate32(timestamp) = {day:Date32}", {**params, "day": day}
    sql = f"SELECT uniqExact(_part, _part_granule_offset) FROM {DB}.events WHERE {where}"
    return int(hook.query_rows(sql, params)[0][0])


def _truth(hook: ClickHouseHook, team: int, day: dt.date) -> tuple[int, int]:
    """(rows, Σ cityHash64(uuid)) of the team-day, asked independently of the export's SELECT."""
    ((rows, digest),) = hook.query_rows(
        f"SELECT count(), sum(cityHash64(toString(uuid))) FROM {DB}.events "
        "WHERE team_id = {team:Int64} AND toDate32(timestamp) = {day:Date32}", {"team": team, "day": day})
    return int(rows), int(digest)


def _written(hook: ClickHouseHook, storage: DucklingStorage, key: str) -> tuple[int, int]:
    """(rows, Σ cityHash64(uuid)) of a written file, read back through ClickHouse's ``s3()``."""
    destination, params = storage.clickhouse_table_function(key)
    ((rows, digest),) = hook.query_rows(f"SELECT count(), sum(cityHash64(`uuid`)) FROM {destination}", params)
    return int(rows), int(digest)


def _exact_select(hook: ClickHouseHook, storage: DucklingStorage, scope: Partition,
                  settings: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The SELECT (with its SETTINGS) of the very statement the export task sends, and its parameters."""
    sql, params = export_statement(hook, storage, EVENTS, scope, scope.object_key("events", "explain"),
                                   merged_settings(settings))
    select = sql[sql.index("SELECT\n"):]
    assert select.startswith(export_select(EVENTS, hook.database)) and sql.endswith(select)
    return select, params


# ---------------------------------------------------------------- 1. pruning


def test_one_day_of_a_long_history_reads_only_that_days_granules(source, storage):
    select, params = _exact_select(source, storage, Partition(HISTORY_TEAM, DAY))
    selected, total = _explain_granules(source, select, params)
    day, team = _granules(source, HISTORY_TEAM, DAY), _granules(source, HISTORY_TEAM)
    assert team >= 1000 and total > team  # a long history, among other teams
    assert day <= selected <= day + 3, (selected, day)  # the day's granules and the boundary ones, no more

    # The predicate it replaces reads every granule of the team: this table shows the difference.
    old = select.replace(select[select.index("WHERE"):select.index("\nSETTINGS")], OLD_WHERE)
    old = old.replace(" AS ev\n", "\n").replace("ev.", "")
    old_selected, _ = _explain_granules(source, old, params)
    assert old_selected >= team


def test_a_team_holding_only_the_day_reads_as_few_granules(source, storage):
    select, params = _exact_select(source, storage, Partition(SINGLE_TEAM, DAY))
    selected, _ = _explain_granules(source, select, params)
    assert _granules(source, SINGLE_TEAM, DAY) <= selected <= _granules(source, SINGLE_TEAM, DAY) + 3


def test_a_month_of_a_long_history_reads_only_that_months_granules(source, storage):
    """The batch statement (a month of history, each day its own file) prunes like a day: the month's
    granules of the team's 1,100 days, not the history; and it writes exactly the month's rows per day."""
    from airflow_provider_duckling.domain.partitions import DayRange
    from airflow_provider_duckling.domain.tables import export_days_select
    from airflow_provider_duckling.transfer.batch import export_days, range_parameters

    month = DayRange(HISTORY_TEAM, DAY.replace(day=1), (DAY.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
                     - dt.timedelta(days=1))
    select = f"{export_days_select(EVENTS, source.database)}\n{settings_clause(merged_settings(None))}"
    selected, total = _explain_granules(source, select, range_parameters(month, HISTORY_TEAM))
    wanted = int(source.query_rows(
        f"SELECT uniqExact(_part, _part_granule_offset) FROM {DB}.events WHERE team_id = {{team:Int64}} "
        "AND toDate32(timestamp) BETWEEN {first:Date32} AND {last:Date32}",
        {"team": HISTORY_TEAM, "first": month.first, "last": month.last})[0][0])  # granules holding the month
    team = _granules(source, HISTORY_TEAM)
    assert team >= 1000 and wanted * 15 < team  # a month of 36 months
    assert wanted <= selected <= wanted + 3, (selected, wanted)

    result = export_days(source, storage, EVENTS, month, "batch-pruning")
    assert result.day_rows == {p.day.isoformat(): _truth(source, HISTORY_TEAM, p.day)[0] for p in month.partitions}
    for key in result.object_keys:
        day = Partition(HISTORY_TEAM, dt.datetime.strptime(key.split("/year=")[1][:20], "%Y/month=%m/day=%d").date())
        assert key == day.object_key("events", "batch-pruning")
        assert _written(source, storage, key) == _truth(source, HISTORY_TEAM, day.day)


# ---------------------------------------------------------------- 2. settings cannot change the rows


@pytest.mark.parametrize("settings", [
    {},
    {"prefer_column_name_to_alias": 1},
    {"session_timezone": "Asia/Kolkata"},
    {"prefer_column_name_to_alias": 1, "session_timezone": "America/New_York", "max_threads": 1},
], ids=["defaults", "column-names-first", "kolkata", "all"])
def test_the_days_rows_do_not_depend_on_settings(source, storage, settings, request):
    scope = Partition(HISTORY_TEAM, DAY)
    truth = _truth(source, HISTORY_TEAM, DAY)
    assert truth[0] == ROWS
    assert count_partition_rows(source, EVENTS, scope, merged_settings(settings)) == ROWS
    result = export_partition(source, storage, EVENTS, scope, f"settings-{request.node.callspec.id}",
                              merged_settings(settings))
    assert result.rows == ROWS
    assert _written(source, storage, result.object_keys[0]) == truth


def test_the_old_analyzer_is_refused_by_this_engine_or_gives_the_same_rows(source, storage):
    scope = Partition(HISTORY_TEAM, DAY)
    try:
        counted = count_partition_rows(source, EVENTS, scope, merged_settings({"enable_analyzer": 0}))
    except (ClickHouseError, ClickHouseQueryError) as exc:  # ClickHouse 26.9 (chdb 4.4): the analyzer is mandatory
        assert "enable_analyzer" in str(exc) and "cannot be disabled" in str(exc)
        return
    assert counted == ROWS


#: Settings that cut or filter a result, each with what it does to the day's SELECT left to itself.
ATTACKS: list[tuple[dict[str, Any], int | None]] = [
    ({"limit": 5}, 5),
    ({"offset": 290}, 10),
    ({"additional_table_filters": "{'pruning.events': 'event = \\'$pageview\\''}"}, 75),
    ({"additional_result_filter": "event = '$pageview'"}, 75),
    ({"max_result_rows": 10, "result_overflow_mode": "break", "max_block_size": 10}, None),  # a few blocks
    ({"max_rows_to_read": 10, "read_overflow_mode": "break"}, None),
    ({"max_rows_to_read_leaf": 10, "read_overflow_mode_leaf": "break"}, None),
    ({"max_execution_time": 1, "timeout_overflow_mode": "break"}, None),
    ({"max_rows_to_group_by": 1, "group_by_overflow_mode": "any"}, None),
    ({"final": 1}, None),
    ({"apply_deleted_mask": 0}, None),
    ({"skip_unavailable_shards": 1}, None),
]
ATTACK_IDS = ["-".join(attack) for attack, _ in ATTACKS]


def _refused_name(attack: dict[str, Any]) -> str:
    return next(name for name in attack if name in ROW_SETTINGS)


@pytest.mark.parametrize("attack, left_alone", ATTACKS, ids=ATTACK_IDS)
def test_a_setting_that_would_cut_the_rows_is_refused_in_one_line(source, storage, attack, left_alone):
    select, params = _exact_select(source, storage, Partition(HISTORY_TEAM, DAY))
    if left_alone is not None:  # what it would do: the day's SELECT with it, without the forced settings
        bare = select[:select.index("\nSETTINGS")]
        assert len(source.query_rows(f"{bare}\n{settings_clause(attack)}", params)) == left_alone < ROWS
    with pytest.raises(ConfigurationError) as refused:
        merged_settings(attack)
    message = str(refused.value)
    name = _refused_name(attack)
    assert "\n" not in message and f"clickhouse_settings: {name} = " in message
    assert f"only {ROW_SETTINGS[name]!r} is allowed" in message


def test_forced_values_are_accepted_and_come_last():
    given = {"read_overflow_mode": "THROW", "max_rows_to_read": 10**9, "limit": 0, "max_threads": 2}
    merged = merged_settings(given)
    assert list(merged)[-len(ROW_SETTINGS):] == list(ROW_SETTINGS)
    assert merged["read_overflow_mode"] == "throw" and merged["max_rows_to_read"] == 10**9
    assert merged_settings(merged) == merged  # the operator's merged settings pass through the export again


PROFILE_CASES = [attack for attack, left_alone in ATTACKS if left_alone is not None] + [
    {"max_rows_to_read": 10, "read_overflow_mode": "break"},
]


@pytest.mark.parametrize("profile", PROFILE_CASES, ids=["-".join(p) for p in PROFILE_CASES])
def test_a_server_profile_cannot_cut_the_export(stack, source, storage, profile):
    """The same values in force on the server (a ``SET`` on the test server's one session stays in force, as
    a profile's would): the export writes the whole day, or fails; it never writes part of it."""
    scope = Partition(HISTORY_TEAM, DAY)
    truth = _truth(source, HISTORY_TEAM, DAY)
    token = "profile-" + "-".join(profile).replace("_", "-")[:40]
    source.execute("SET " + settings_clause(profile).removeprefix("SETTINGS "))
    try:
        select, params = _exact_select(source, storage, scope)
        bare = select[:select.index("\nSETTINGS")]
        cut = len(source.query_rows(bare, params))  # the profile is in force for a statement without them
        try:
            result = export_partition(source, storage, EVENTS, scope, token)
        except ClickHouseQueryError as exc:  # a limit left in force fails the task loudly
            assert "max_rows_to_read" in profile and "TOO_MANY_ROWS" in str(exc)
            result = None
    finally:
        source.execute("SET " + ", ".join(f"{name} = DEFAULT" for name in profile))
    if "max_rows_to_read" not in profile:
        assert cut < ROWS
        assert result is not None and result.rows == ROWS
        assert _written(source, storage, result.object_keys[0]) == truth
    else:
        assert result is None
        assert not [k for k in stack.keys(storage.bucket, scope.prefix("events")) if token in k]  # nothing written


class LateArrivals(ClickHouseHook):
    """Events of the day arrive right after the export counted them (as late events do): inserted for real."""

    def __init__(self, conn_id: str, team: int, day: dt.date, rows: int) -> None:
        super().__init__(conn_id)
        self.late = (team, day, rows)

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        answer = super().query_rows(sql, parameters)
        if sql.startswith("SELECT count(), ") and self.late:
            team, day, rows = self.late
            self.late = None
            insert_events(self, team, day, rows)
        return answer


def test_rows_written_must_equal_rows_counted(source, storage):
    scope = Partition(LATE_TEAM, LATE_DAY)
    late = LateArrivals(CONN_ID, LATE_TEAM, LATE_DAY, 7)
    with pytest.raises(RowCountMismatchError, match="wrote 47 rows but 40 were counted just before; nothing was registered"):
        export_partition(late, storage, EVENTS, scope, "late-1")
    assert issubclass(RowCountMismatchError, TransientError)  # retried: the next attempt counts again
    assert export_partition(source, storage, EVENTS, scope, "late-2").rows == 47


def test_a_refused_setting_fails_the_task_and_writes_nothing(stack, caplog, capfd):
    from tests.support.runs import catalog_tables, logged_text, run

    fresh = stack.new_duckling(1, "rowsafe")
    assert run(1, DAYS[0], clickhouse_settings={"limit": 5}).state == "failed"
    assert "clickhouse_settings: limit = 5 would change which rows are exported" in logged_text(caplog, capfd)
    assert stack.keys(fresh.bucket) == []
    assert catalog_tables(stack, fresh) == 0


# ---------------------------------------------------------------- 3. pre-1970 and after-2149 rows


def test_edge_rows_share_one_part_with_the_days_and_wrap_under_todate(source):
    ((parts, first_wrap, last_wrap),) = source.query_rows(
        f"SELECT uniqExact(_part), toDate(min(timestamp)), toDate(max(timestamp)) FROM {DB}.events "
        "WHERE team_id = {team:Int64}", {"team": EDGE_TEAM})
    assert parts == 1  # 1969, 1970, 2024 and 2150 rows in one part
    assert (first_wrap, last_wrap) == (dt.date(2149, 6, 6), WRAP_DAY)  # what toDate() makes of 1969 and 2150


@pytest.mark.parametrize("day", list(EDGE_DAYS), ids=str)
def test_days_beside_edge_rows_export_exactly(source, storage, day):
    scope = Partition(EDGE_TEAM, day)
    assert count_partition_rows(source, EVENTS, scope) == EDGE_DAYS[day]
    result = export_partition(source, storage, EVENTS, scope, f"edge-{day}")
    assert result.rows == EDGE_DAYS[day]
    assert _written(source, storage, result.object_keys[0]) == _truth(source, EDGE_TEAM, day)


def test_discovery_and_day_counts_are_not_fooled_by_edge_rows(source):
    found = discover_start_dates(source, [EDGE_TEAM, EDGE_ONLY_TEAM], EPOCH, ("events",))
    assert found == {"events": {EDGE_TEAM: EPOCH, EDGE_ONLY_TEAM: LATE_DAY}}  # not 1969, not a wrapped 1970-07-28
    assert clickhouse_day_counts(source, EDGE_ONLY_TEAM) == {LATE_DAY: 20, FAR_FUTURE: 1}
    assert clickhouse_day_counts(source, EDGE_TEAM) == {**EDGE_DAYS, FAR_FUTURE: 2}
