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
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from airflow_provider_duckling.scheduling.dag_files import DAG_FILES

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"
IMAGE_SRC = "/opt/duckling/src"  # where the Dockerfile copies the sources it builds the package from
PACKAGE = "airflow_provider_duckling"
ENTRY_POINTS = {
    "apache_airflow_provider": {"provider_info": "airflow_provider_duckling:get_provider_info"},
    "airflow.plugins": {"duckling": "airflow_provider_duckling.plugins.duckling:DucklingPlugin"},
    "console_scripts": {"duckling": "airflow_provider_duckling.cli.main:main"},
}


def _image_copies() -> list[str]:
    """The repository paths the Dockerfile copies into :data:`IMAGE_SRC` (its pip builds the package there)."""
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            args = [a for a in shlex.split(line)[1:] if not a.startswith("--")]
            if args[-1].startswith(IMAGE_SRC):
                sources += args[:-1]
    return sources


def _clean_env() -> dict[str, str]:
    """The caller's environment without this test session's Airflow settings or import paths."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _package_files(root: Path) -> set[str]:
    """Every file of the package under ``root``, as wheel paths (no byte-code caches)."""
    return {p.relative_to(root).as_posix() for p in (root / PACKAGE).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, set[str]]:
    """Build the wheel from a copy of the image's build context, as the image's ``pip install`` does (PEP 517,
    isolated build environment with pyproject.toml's pinned setuptools). Returns the wheel, the build's output
    and the package files that went in.

    PYTHONDONTWRITEBYTECODE is left out of the build's environment: under it setuptools prints "byte-compiling
    is disabled", a note about the caller's environment (the wheel holds no byte-code either way).
    """
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for source in _image_copies():
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, src / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / source)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(src)],
        env={k: v for k, v in _clean_env().items() if k != "PYTHONDONTWRITEBYTECODE"},
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    wheels = list((tmp / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], output, _package_files(src)


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


@pytest.mark.slow
def test_the_demo_runs_from_the_wheel_in_a_fresh_virtualenv(build, tmp_path):
    wheel, _, _ = build
    venv = tmp_path / "venv"
    work = tmp_path / "cwd"  # nothing of the checkout here: imports come from the venv only
    work.mkdir()
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, cwd=work, timeout=300)
    python = venv / "bin" / "python"

    started = time.monotonic()
    # --no-compile: byte-code is a cache Python writes on first import; compiling ~9,000 files up front only
    # costs CPU here.
    install = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-compile",
                              str(wheel)],
                             env=env, cwd=work, capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    print(f"\nfresh install of the wheel and its dependencies: {time.monotonic() - started:.0f} s")
    check = subprocess.run([str(python), "-m", "pip", "check"], env=env, cwd=work, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    # The installed copy is the one imported; Airflow finds the provider and the plugin; the command runs.
    probe = subprocess.run([str(python), "-c", (
        "import json, importlib.metadata as md, airflow_provider_duckling as p\n"
        "from airflow.providers_manager import ProvidersManager\n"
        "plugin = next(e for e in md.entry_points(group='airflow.plugins') if e.name == 'duckling').load()\n"
        "info = ProvidersManager().providers['airflow-provider-duckling']\n"
        "hooks = {c['connection-type']: c['hook-class-name'] for c in info.data['connection-types']}\n"
        "for path in hooks.values():\n"
        "    module, _, name = path.rpartition('.')\n"
        "    getattr(__import__(module, fromlist=[name]), name)\n"
        "print(json.dumps({'file': p.__file__, 'plugin': plugin.name, 'version': info.version, 'hooks': hooks}))"
    )], env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    site_packages = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert Path(found["file"]).resolve().is_relative_to(site_packages.resolve()), found["file"]
    assert found["version"] == "0.1.0" and found["plugin"] == "duckling"
    assert {"clickhouse", "ducklake"} <= set(found["hooks"]), found["hooks"]  # each hook class imported
    cli = subprocess.run([str(venv / "bin" / "duckling"), "--help"], env=env, cwd=work, capture_output=True,
                         text=True, timeout=300)
    assert cli.returncode == 0 and "usage: duckling" in cli.stdout, cli.stdout + cli.stderr

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
