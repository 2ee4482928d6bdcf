"""The package as a user or the Docker image gets it: a wheel built from the image's own build context, with no
build warning, holding every runtime file and entry point and nothing else; installed non-editably into a fresh
virtualenv, where the provider, the plugin and the ``duckling`` command are found and the demo runs end to end.

What is fresh: the virtualenv (``python -m venv`` on the base interpreter, no system site-packages), the wheel,
every dependency resolved and installed by the venv's own pip from the package index this machine reaches, the
working directory (a temp dir: nothing of the checkout is importable). What is shared: only pip's download cache,
where pip keeps one. The install takes about 100 s on an idle 2-core machine (about 1.5 GB, Airflow and chdb
being most of it), 3-4 minutes when other work shares the cores; the demo about as long again.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from airflow_provider_duckling.scheduling.dag_files import DAG_FILES
from tests.support.wheel import DOCKERFILE, IMAGE_SRC, PACKAGE, REPO, build_wheel
from tests.support.wheel import clean_env as _clean_env
from tests.support.wheel import image_copies as _image_copies

ENTRY_POINTS = {
    "apache_airflow_provider": {"provider_info": "airflow_provider_duckling:get_provider_info"},
    "airflow.plugins": {"duckling": "airflow_provider_duckling.plugins.duckling:DucklingPlugin"},
    "console_scripts": {"duckling": "airflow_provider_duckling.cli.main:main"},
}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, set[str]]:
    """The wheel, built as the image's ``pip install`` builds it (:func:`tests.support.wheel.build_wheel`):
    the wheel, the build's output and the package files that went in."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_repositorys_dag_files_are_the_ones_the_package_writes():
    """The demo from an installed package writes :data:`DAG_FILES`; from a checkout it runs dags/. Same code."""
    def code(text: str) -> str:
        body = ast.parse(text).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the module docstring
        return ast.dump(ast.Module(body=body, type_ignores=[]))

    for name, text in DAG_FILES.items():
        assert code((REPO / "dags" / name).read_text()) == code(text), name
    assert sorted(p.name for p in (REPO / "dags").glob("*.py")) == sorted(DAG_FILES)


def test_the_image_builds_the_package_from_the_same_context():
    """The Dockerfile copies the build inputs to one directory and pip-installs that directory non-editably."""
    assert set(_image_copies()) >= {"setup.cfg", "pyproject.toml", "README.md", PACKAGE}
    installs = [line for line in DOCKERFILE.read_text().splitlines() if "pip install" in line]
    assert installs and any(IMAGE_SRC in line for line in installs), installs
    assert not any(re.search(r"\s(-e|--editable)\s", line) for line in installs), installs
    # The build backend is pinned, so "no warning" holds for the image's build too.
    assert re.search(r'requires\s*=\s*\["setuptools==[\d.]+"\]', (REPO / "pyproject.toml").read_text())


@pytest.mark.slow
def test_the_wheel_builds_without_warnings(build):
    wheel, output, _ = build
    assert wheel.name == "airflow_provider_duckling-0.1.0-py3-none-any.whl"
    listing = ("adding '", "copying ", "creating ", "writing ")  # file names may contain any word
    warnings = [line for line in output.splitlines()
                if not line.lstrip().startswith(listing) and re.search(r"warn|deprecat|!!", line, re.IGNORECASE)]
    assert warnings == [], output[-5000:]
    assert f"Successfully built {wheel.name}" in output


@pytest.mark.slow
def test_the_wheel_holds_the_runtime_files_and_entry_points(build):
    wheel, _, package_files = build
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = "airflow_provider_duckling-0.1.0.dist-info"
        entry_points = configparser.ConfigParser(delimiters=("=",))
        entry_points.read_string(zf.read(f"{dist_info}/entry_points.txt").decode())
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    # Every file of the package (modules, sql/*.sql, any data) and nothing else: no tests/, dags/, bench/.
    assert {n for n in names if not n.startswith(dist_info + "/")} == package_files
    assert f"{PACKAGE}/sql/clickhouse_schema.sql" in names
    assert {f"{PACKAGE}/scheduling/dag_files.py", f"{PACKAGE}/demo/__main__.py", f"{PACKAGE}/common/moved.py"} <= names
    assert not any(n.startswith(("tests/", "dags/", "bench/", "docker/")) or n.endswith(".pyc") for n in names)
    assert {group: dict(entry_points[group]) for group in entry_points.sections()} == ENTRY_POINTS
    # Metadata 2.4 with an SPDX licence expression; every pinned dependency of setup.cfg is declared.
    assert "License-Expression: Apache-2.0" in metadata and "\nLicense:" not in metadata
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    required = [line.strip() for line in setup["options"]["install_requires"].splitlines()
                if line.strip() and not line.strip().startswith("#")]
    declared = re.findall(r"^Requires-Dist: (\S+)$", metadata, re.MULTILINE)
    assert required and set(required) <= set(declared), set(required) - set(declared)


#: Run by the fresh virtualenv's interpreter, in the test session's Airflow environment: parse the DAG files
#: and move one team-day through the session's ClickHouse server, moto S3 and PostgreSQL catalog.
EXPORT_THROUGH_A_SERVER = """
import datetime as dt, importlib.util, json, sys
import airflow_provider_duckling as p
from airflow_provider_duckling.domain.partitions import dag_id_for
from airflow_provider_duckling.scheduling.airflow_env import load_dags, run_day
team, day = int(sys.argv[1]), dt.date.fromisoformat(sys.argv[2])
bag = load_dags()
run = run_day(bag.get_dag(dag_id_for("events", team)), day)
print(json.dumps({"file": p.__file__, "chdb": importlib.util.find_spec("chdb") is not None,
                  "errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": len(bag.dag_ids),
                  "state": str(run.state)}))
"""


def _pip_install(python: Path, *args: str, cwd: Path) -> float:
    """``pip install`` into the venv of ``python`` at the versions of constraints.txt; returns seconds taken."""
    started = time.monotonic()
    # --no-compile: byte-code is a cache Python writes on first import; compiling ~9,000 files up front only
    # costs CPU here.
    install = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-compile",
                              "-c", str(REPO / "constraints.txt"), *args],
                             env=_clean_env(), cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    check = subprocess.run([str(python), "-m", "pip", "check"], env=_clean_env(), cwd=cwd, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return time.monotonic() - started


@pytest.mark.slow
def test_a_production_install_exports_through_a_server_and_the_embedded_extra_runs_the_demo(build, tmp_path, stack):
    """The wheel alone (what a production image installs): no chdb, yet it imports, Airflow finds the provider
    and plugin, the DAG files parse and a day moves through a ClickHouse server. Then ``[embedded]`` is added to
    the same virtualenv and the demo runs end to end on embedded engines."""
    from airflow_provider_duckling.demo.report import lake_day_counts
    from tests.support.stack import DAYS
    from tests.support.wheel import site_packages, tree_megabytes

    wheel, _, _ = build
    venv = tmp_path / "venv"
    work = tmp_path / "cwd"  # nothing of the checkout here: imports come from the venv only
    work.mkdir()
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, cwd=work, timeout=300)
    python = venv / "bin" / "python"
    installed = site_packages(venv)

    seconds = _pip_install(python, str(wheel), cwd=work)
    production_mb = tree_megabytes(installed)
    print(f"\nproduction install (the wheel, no extra): {seconds:.0f} s, {production_mb:.0f} MB of site-packages")

    # The installed copy is the one imported; Airflow finds the provider and the plugin; the command runs.
    probe = subprocess.run([str(python), "-c", (
        "import json, importlib.metadata as md, airflow_provider_duckling as p\n"
        "from airflow.providers_manager import ProvidersManager\n"
        "plugin = next(e for e in md.entry_points(group='airflow.plugins') if e.name == 'duckling').load()\n"
        "manager = ProvidersManager()\n"
        "info = manager.providers['airflow-provider-duckling']\n"
        "hooks = {c['connection-type']: c['hook-class-name'] for c in info.data['connection-types']}\n"
        "hooks['clickhouse'] = manager.hooks['clickhouse'].hook_class_name\n"
        "for path in hooks.values():\n"
        "    module, _, name = path.rpartition('.')\n"
        "    getattr(__import__(module, fromlist=[name]), name)\n"
        "print(json.dumps({'file': p.__file__, 'plugin': plugin.name, 'version': info.version, 'hooks': hooks}))"
    )], env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).resolve().is_relative_to(installed.resolve()), found["file"]
    assert found["version"] == "0.1.0" and found["plugin"] == "duckling"
    assert found["hooks"] == {"ducklake": "airflow_provider_duckling.hooks.ducklake.DuckLakeHook",
                              "clickhouse": "airflow.providers.clickhousedb.hooks.clickhouse.ClickHouseHook"}
    cli = subprocess.run([str(venv / "bin" / "duckling"), "--help"], env=env, cwd=work, capture_output=True,
                         text=True, timeout=300)
    assert cli.returncode == 0 and "usage: duckling" in cli.stdout, cli.stdout + cli.stderr

    # This session's Airflow, registry and connections (ClickHouse server, moto, PostgreSQL), the venv's package.
    team, day = 1, DAYS[0]
    duckling = stack.new_duckling(team, "prodinstall")
    session_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    moved = subprocess.run([str(python), "-c", EXPORT_THROUGH_A_SERVER, str(team), day.isoformat()],
                           env=session_env, cwd=work, capture_output=True, text=True, timeout=600)
    assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr[-3000:]
    result = json.loads(moved.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(installed.resolve()), result["file"]
    assert result["chdb"] is False and result["errors"] == {} and result["dags"] > 0
    assert result["state"] == "success", moved.stdout[-3000:]
    assert lake_day_counts(duckling, "events") == {day: stack.counts[(team, day)]}

    seconds = _pip_install(python, f"{wheel}[embedded]", cwd=work)
    embedded_mb = tree_megabytes(installed)
    print(f"adding [embedded]: {seconds:.0f} s, {embedded_mb:.0f} MB of site-packages "
          f"(+{embedded_mb - production_mb:.0f} MB)")
    assert embedded_mb - production_mb > 300  # chdb and its engine: about 550 MB

    home = tmp_path / "home"
    demo = subprocess.run([str(python), "-m", "airflow_provider_duckling.demo", "--home", str(home)],
                          env=env, cwd=work, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    lines = [line for line in demo.stdout.splitlines() if line.strip().endswith((" ok", "DIFFERS"))]
    assert len(lines) == 18 and all(line.endswith(" ok") for line in lines), demo.stdout
    for line in lines:
        _, table, _, in_clickhouse, in_lake, _ = line.split()
        assert table in ("events", "persons") and int(in_clickhouse) == int(in_lake) > 0
    # No checkout: the demo ran the DAG files the package writes, and left its lakes in its home.
    assert sorted(p.name for p in (home / "dags").glob("*.py")) == sorted(DAG_FILES)
    assert (home / "lakes" / "duckling_team_1.ducklake").exists()
    events = list((home / "lakes" / "duckling-team-1").rglob("events/**/*.parquet"))
    assert len(events) == 3, events
