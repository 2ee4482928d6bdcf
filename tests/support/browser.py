"""Chromium from the OS packages, driven by Playwright, for tests of the real Airflow UI.

Nothing here downloads a browser: ``make test`` installs Debian's ``chromium`` and Playwright launches that
binary (``executable_path``); ``playwright install`` is never run. Every step saves a screenshot into
the test artefacts directory (``DUCKLING_TEST_ARTIFACTS``, default ``test-artifacts/`` in the checkout).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")


def chromium_path() -> str:
    """The OS's Chromium; fails with the one command that installs it (``make test`` runs it when missing)."""
    for candidate in (os.environ.get("DUCKLING_CHROMIUM"), *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError("no Chromium found: `apt-get install -y chromium` (make test installs it)")


def artifacts_dir(name: str) -> Path:
    """A fresh directory for one test's screenshots."""
    root = Path(os.environ.get("DUCKLING_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@dataclass
class Screenshots:
    """Numbered full-page screenshots of a page, one per step, named after the step."""

    page: Any
    directory: Path
    taken: list[Path] = field(default_factory=list)

    def __call__(self, step: str, height: int | None = None) -> Path:
        """Save the page as ``NN-step.png``; ``height``: a taller window for this one (a long dialog)."""
        slug = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")
        path = self.directory / f"{len(self.taken) + 1:02d}-{slug}.png"
        size = self.page.viewport_size
        if height:
            self.page.set_viewport_size({"width": size["width"], "height": height})
        try:
            self.page.screenshot(path=str(path))
        finally:
            if height:
                self.page.set_viewport_size(size)
        self.taken.append(path)
        return path


def launch(playwright: Any, artefacts: Path, base_url: str) -> tuple[Any, Any, Screenshots]:
    """A headless Chromium page at a wide viewport (the grid shows more runs) and its screenshot taker.
    Waits are generous (30 s): the machine's two cores are shared with Airflow's components."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, base_url=base_url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return browser, page, Screenshots(page, artefacts)


def api_get(page: Any, path: str) -> Any:
    """GET ``/api/v2/…`` from the page, authenticated by the UI's own session (what the UI itself shows)."""
    return page.evaluate(
        """async (path) => {
            const token = document.cookie.split('; ').find(c => c.startsWith('_token='));
            const headers = token ? {Authorization: 'Bearer ' + token.slice(7)} : {};
            const response = await fetch(path, {headers});
            return {status: response.status, body: await response.json()};
        }""",
        path,
    )
