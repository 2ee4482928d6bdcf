"""The stack itself: each engine answers, and the DuckLake hook attaches a PostgreSQL + S3 duckling."""

from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook
from airflow_provider_duckling.hooks.ducklake import DuckLakeHook
from tests.support.stack import DAYS, OTHER_TEAM, TEAMS


def test_clickhouse_over_http_holds_the_seeded_events(stack):
    hook = ClickHouseHook()
    assert not hook.is_embedded
    rows = hook.query_rows(
        "SELECT team_id, count() FROM posthog.events WHERE team_id IN {teams:Array(Int64)} GROUP BY team_id",
        {"teams": str([*TEAMS, OTHER_TEAM])},
    )
    expected = {t: sum(stack.counts[(t, d)] for d in DAYS) for t in [*TEAMS, OTHER_TEAM]}
    assert dict(rows) == expected


def test_ducklake_attaches_postgres_catalog_and_s3_data(stack):
    duckling = stack.new_duckling(7, "smoke")
    with DuckLakeHook().attach(duckling) as con:
        con.execute("CREATE TABLE lake.t AS SELECT 42 AS x")
        con.execute("COPY (SELECT range AS x FROM range(5)) TO 's3://smoke-t7/probe.parquet'")
        assert con.execute("SELECT count(*) FROM 's3://smoke-t7/probe.parquet'").fetchone() == (5,)
        assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
    with DuckLakeHook().attach(duckling) as con:
        assert con.execute("SELECT x FROM lake.t").fetchall() == [(42,)]
    assert "probe.parquet" in stack.keys("smoke-t7")
