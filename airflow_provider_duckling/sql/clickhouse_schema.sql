-- PostHog-style source tables (posthog-tables.md), single-node shape.
-- Used by the tests, the embedded demo and the docker-compose ClickHouse init, so they cannot drift.
CREATE DATABASE IF NOT EXISTS posthog;

CREATE TABLE IF NOT EXISTS posthog.events
(
    uuid UUID,
    event String,
    properties String,
    timestamp DateTime64(6, 'UTC'),
    team_id Int64,
    distinct_id String,
    elements_chain String,
    created_at DateTime64(6, 'UTC'),
    person_id UUID,
    person_created_at DateTime64(3),
    person_properties String,
    group0_properties String,
    group1_properties String,
    group2_properties String,
    group3_properties String,
    group4_properties String,
    group0_created_at DateTime64(3),
    group1_created_at DateTime64(3),
    group2_created_at DateTime64(3),
    group3_created_at DateTime64(3),
    group4_created_at DateTime64(3),
    person_mode Enum8('full' = 0, 'propertyless' = 1, 'force_upgrade' = 2),
    historical_migration Bool
)
ENGINE = MergeTree
ORDER BY (team_id, toDate(timestamp), event, cityHash64(distinct_id), cityHash64(uuid));

CREATE TABLE IF NOT EXISTS posthog.person
(
    id UUID,
    team_id Int64,
    properties String,
    is_identified Int8,
    created_at DateTime64(3),
    version UInt64,
    is_deleted Int8,
    _timestamp DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (team_id, id);

CREATE TABLE IF NOT EXISTS posthog.person_distinct_id2
(
    team_id Int64,
    distinct_id String,
    person_id UUID,
    version Int64,
    is_deleted Int8,
    _timestamp DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (team_id, distinct_id);
