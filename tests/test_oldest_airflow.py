"""The oldest installation setup.cfg allows, installed and run: Airflow :data:`OLDEST_AIRFLOW` with every direct
dependency at its lower bound, as a user adding the provider to an existing Airflow of that age would have it.

The wheel (built as tests/test_wheel_install.py builds it) goes into a fresh virtualenv with
``apache-airflow==OLDEST_AIRFLOW`` and the ``[embedded]`` extra, under a constraints file made from setup.cfg:
each ``name>=X`` of ``install_requires`` and of the ``embedded`` extra becomes ``name==X`` (``==`` pins stay);
every other package resolves to what pip picks. Then: ``pip check``, the installed versions are the lower
bounds, the demo parses the DAGs and moves one team-day on the embedded engines, ``airflow dags list`` lists
them, ``duckling status`` reports the day, and without chdb (a production install) the ClickHouse hook
still imports.

The install takes about a minute on an idle 2-core machine with pip's cache warm (about 1.3 GB of
site-packages, chdb and its engine about 550 MB of it); the demo 20-30 s.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from airflow_provider_duckling.scheduling.airflow_env import airflow_environment, connection_env
from tests.support.wheel import REPO, build_wheel, clean_env, site_packages, tree_megabytes

#: The oldest Airflow the provider supports, and setup.cfg's lower bound for apache-airflow. Our asset events
#: carry partition keys through ``OutletEventAccessor.add_partitions``, which first appears in
#: apache-airflow-task-sdk 1.3.0, the task SDK of Airflow 3.3.0.
OLDEST_AIRFLOW = "3.3.0"
#: The extra the demo and the tests need: the embedded ClickHouse engine (chdb).
EMBEDDED = "embedded"


def lower_bounds(setup_cfg: Path = REPO / "setup.cfg") -> dict[str, str]:
    """``{name: version}`` of each direct dependency (``install_requires`` and the ``embedded`` extra) at its
    lower bound: ``X`` of ``name>=X`` or ``name==X``. A requirement with no lower bound fails."""
    setup = configparser.ConfigParser()
    setup.read(setup_cfg)
    lines = setup["options"]["install_requires"].splitlines() + setup["options.extras_require"][EMBEDDED].splitlines()
    bounds = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        lowest = [s.version for s in requirement.specifier if s.operator in (">=", "==")]
        assert len(lowest) == 1, f"{text}: needs exactly one lower bound (>= or ==)"
        bounds[canonicalize_name(requirement.name)] = lowest[0]
    return bounds


def demo_env(home: Path) -> dict[str, str]:
    """The Airflow environment ``python -m airflow_provider_duckling.demo --home HOME`` runs in (an installed
    package writes the DAG files into HOME/dags): what ``airflow`` and ``duckling`` need to see its Airflow."""
    env = airflow_environment(home / "airflow", home / "ducklings.yaml", home / "dags")
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    env["AIRFLOW__DUCKLING__SETTLE_MINUTES"] = "0"
    env.update([
        connection_env("clickhouse_default", "clickhouse", schema="posthog", extra={"chdb_path": str(home / "chdb")}),
        connection_env("ducklake_default", "ducklake", extra={"local_root": str(home / "lakes")}),
    ])
    return env


#: Run in the venv: every installed distribution's version, and the bytes chdb and its engine take.
LISTING = """
import json, importlib.metadata as md
versions = {d.metadata["Name"]: d.version for d in md.distributions()}
chdb = sum(f.locate().stat().st_size for name in ("chdb", "chdb-core") if name in versions
           for f in md.distribution(name).files or () if f.locate().is_file())
print(json.dumps({"versions": versions, "chdb_bytes": chdb}))
"""


def test_setup_cfg_starts_at_the_oldest_airflow():
    bounds = lower_bounds()
    assert bounds["apache-airflow"] == OLDEST_AIRFLOW
    assert "chdb" in bounds  # the embedded engine is an extra, bounded like the rest


@pytest.fixture
def venv(tmp_path: Path) -> Iterator[Path]:
    """A fresh virtualenv (``python -m venv`` on the base interpreter), removed afterwards: it grows to 1.3 GB."""
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=clean_env(), cwd=tmp_path, timeout=300)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_the_oldest_airflow_with_the_lowest_dependencies_moves_a_partition(tmp_path_factory, tmp_path, venv):
    wheel, _, _ = build_wheel(tmp_path_factory.mktemp("wheel"))
    bounds = lower_bounds()
    constraints = tmp_path / "lower-bounds.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(bounds.items())))
    work = tmp_path / "cwd"  # nothing of the checkout here: imports come from the venv only
    work.mkdir()
    env = clean_env()
    python = venv / "bin" / "python"

    def run(*args: str, timeout: float = 300, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env={**env, **(extra_env or {})}, cwd=work, capture_output=True, text=True,
                              timeout=timeout)

    started = time.monotonic()
    install = run(str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-compile",
                  "-c", str(constraints), f"apache-airflow=={OLDEST_AIRFLOW}", f"{wheel}[{EMBEDDED}]", timeout=1200)
    # This machine's pip configuration warns about every local index it skips: the conflict, if any, is the rest.
    errors = "\n".join(line for line in install.stderr.splitlines() if "is ignored: it is neither" not in line)
    assert install.returncode == 0, install.stdout[-3000:] + errors[-3000:]
    install_seconds = time.monotonic() - started
    check = run(str(python), "-m", "pip", "check")
    assert check.returncode == 0, check.stdout + check.stderr

    listing = run(str(python), "-c", LISTING)
    assert listing.returncode == 0, listing.stderr[-3000:]
    found = json.loads(listing.stdout)
    installed = {canonicalize_name(name): version for name, version in found["versions"].items()}
    assert {name: installed.get(name) for name in bounds} == bounds
    packages = site_packages(venv)
    chdb_mb = found["chdb_bytes"] / 1e6
    print(f"\nAirflow {OLDEST_AIRFLOW} (task SDK {installed['apache-airflow-task-sdk']}) and the lowest bounds "
          f"({', '.join(f'{n} {v}' for n, v in sorted(bounds.items()))}): installed in {install_seconds:.0f} s, "
          f"{tree_megabytes(packages):.0f} MB of site-packages ({chdb_mb:.0f} MB of it chdb)")

    # The main job on embedded engines: migrate the metadata DB, parse the DAGs, discover, move one team-day.
    home = tmp_path / "home"
    started = time.monotonic()
    demo = run(str(python), "-m", "airflow_provider_duckling.demo", "--home", str(home), "--teams", "1", "--days", "1",
               timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    print(f"demo (1 team, 1 day): {time.monotonic() - started:.0f} s")
    rows = [line.split() for line in demo.stdout.splitlines() if line.strip().endswith((" ok", "DIFFERS"))]
    assert [(r[0], r[1], r[-1]) for r in rows] == [("1", "events", "ok"), ("1", "persons", "ok")], demo.stdout
    day = rows[0][2]
    assert all(int(r[3]) == int(r[4]) > 0 for r in rows), demo.stdout

    airflow_env = demo_env(home)
    dags = run(str(venv / "bin" / "airflow"), "dags", "list", "--output", "json", extra_env=airflow_env)
    assert dags.returncode == 0, dags.stdout[-3000:] + dags.stderr[-3000:]
    # Airflow's own warnings may print before the JSON list.
    listed, _ = json.JSONDecoder().raw_decode(dags.stdout[dags.stdout.index("[{"):])
    dag_ids = {d["dag_id"] for d in listed}
    assert {"duckling_discover_start_dates", "duckling_events_backfill_team_1",
            "duckling_persons_backfill_team_1"} <= dag_ids, dag_ids

    duckling = str(venv / "bin" / "duckling")
    status = run(duckling, "status", extra_env=airflow_env)
    assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-3000:]
    # The summary's row of team 1: team, lag 0, latest events day, latest persons day, ...
    assert [line.split()[2:4] for line in status.stdout.splitlines() if line.split()[:2] == ["1", "0"]] == [[day, day]], \
        status.stdout
    detail = run(duckling, "status", "1", "--json", extra_env=airflow_env)
    assert detail.returncode == 0, detail.stdout[-3000:] + detail.stderr[-3000:]
    (team,) = json.loads(detail.stdout)["teams"]
    assert team["team_id"] == 1 and team["failed_days"] == 0, team
    for table in ("events", "persons"):
        figures = team["tables"][table]
        assert figures["latest_day"] == day and figures["rows"] > 0, figures

    # A production install has no chdb: the ClickHouse hook (a server over HTTP) imports without it.
    removed = run(str(python), "-m", "pip", "uninstall", "--yes", "chdb", "chdb-core")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    probe = run(str(python), "-c", (
        "import importlib.util\n"
        "from airflow.providers.clickhousedb.hooks.clickhouse import ClickHouseHook as Official\n"
        "from airflow_provider_duckling.hooks.clickhouse import ClickHouseHook\n"
        "assert importlib.util.find_spec('chdb') is None\n"
        "assert issubclass(ClickHouseHook, Official)\n"
    ), extra_env=airflow_env)
    assert probe.returncode == 0, probe.stderr[-3000:]
