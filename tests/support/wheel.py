"""The package as a user gets it: the wheel built from the Docker image's build context, and fresh virtualenvs
to install it into (tests/test_wheel_install.py, tests/test_oldest_airflow.py)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"
IMAGE_SRC = "/opt/duckling/src"  # where the Dockerfile copies the sources it builds the package from
PACKAGE = "airflow_provider_duckling"


def image_copies() -> list[str]:
    """The repository paths the Dockerfile copies into :data:`IMAGE_SRC` (its pip builds the package there)."""
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            args = [a for a in shlex.split(line)[1:] if not a.startswith("--")]
            if args[-1].startswith(IMAGE_SRC):
                sources += args[:-1]
    return sources


def clean_env() -> dict[str, str]:
    """The caller's environment without this test session's Airflow settings or import paths."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def package_files(root: Path) -> set[str]:
    """Every file of the package under ``root``, as wheel paths (no byte-code caches)."""
    return {p.relative_to(root).as_posix() for p in (root / PACKAGE).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def build_wheel(tmp: Path) -> tuple[Path, str, set[str]]:
    """Build the wheel in ``tmp`` from a copy of the image's build context, as the image's ``pip install`` does
    (PEP 517, isolated build environment with pyproject.toml's pinned setuptools). Returns the wheel, the
    build's output and the package files that went in.

    PYTHONDONTWRITEBYTECODE is left out of the build's environment: under it setuptools prints "byte-compiling
    is disabled", a note about the caller's environment (the wheel holds no byte-code either way).
    """
    src = tmp / "src"
    src.mkdir()
    for source in image_copies():
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, src / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / source)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(src)],
        env={k: v for k, v in clean_env().items() if k != "PYTHONDONTWRITEBYTECODE"},
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    wheels = list((tmp / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], output, package_files(src)


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def tree_megabytes(path: Path) -> float:
    """Bytes of the files under ``path`` (what ``du`` counts, without block rounding), in MB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6
