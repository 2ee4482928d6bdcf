"""The README's main-job command works from a fresh clone: seeded chdb → generated DAGs → local ducklings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_from_a_fresh_clone(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    # The clone's package shadows the installed one, so only committed files take part.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PYTHONPATH"] = str(clone)
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_duckling.demo", "--home", str(tmp_path / "home")],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip().endswith((" ok", "DIFFERS"))]
    assert len(lines) == 18 and all(line.endswith(" ok") for line in lines), result.stdout
    for line in lines:
        _, table, _, in_clickhouse, in_lake, _ = line.split()
        assert table in ("events", "persons")
        assert int(in_clickhouse) == int(in_lake) > 0
    assert "duckling_events_backfill_team_3" in result.stdout
    assert (tmp_path / "home" / "lakes" / "duckling_team_1.ducklake").exists()
    data = list((tmp_path / "home" / "lakes" / "duckling-team-1").rglob("*.parquet"))
    # Events: one file per day. Persons: the first run writes the team's full export, which covers the next
    # day too; the last day (not covered: it ends less than settle_minutes before the newest version) tops up.
    assert len([p for p in data if "/events/" in str(p)]) == 3
    persons = sorted(str(p.relative_to(tmp_path / "home" / "lakes" / "duckling-team-1")) for p in data if "/persons/" in str(p))
    assert len(persons) == 2 and "/full/" in persons[0] and "/day=" in persons[1], persons


@pytest.mark.quick
def test_the_demo_moves_one_team_and_day_from_the_working_tree(tmp_path):
    """The quick loop's run of the main job (``make quick``): one team, one day, from the files as they are
    now (committed or not), through the same DAGs; both tables equal ClickHouse."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_duckling.demo", "--home", str(tmp_path / "home"), "--teams", "1",
         "--days", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.strip().endswith((" ok", "DIFFERS"))]
    assert [(team, table, status) for team, table, _, _, _, status in lines] == [
        ("1", "events", "ok"), ("1", "persons", "ok")]
    assert all(int(in_clickhouse) == int(in_lake) > 0 for _, _, _, in_clickhouse, in_lake, _ in lines)
    assert len(list((tmp_path / "home" / "lakes" / "duckling-team-1").rglob("*.parquet"))) == 2
