"""Headless Chromium (Debian's package) for page tests: DOM after rendering, screenshots.

Flags from the workplace notes: no sandbox as root, no background networking (the closed
network refuses it), a fresh profile per call.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1300,900",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail(
            "chromium is not installed: run scripts/setup.sh --dev (apt-get install chromium)"
        )
    return exe


def _run(*args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="edge-twin-chromium-") as profile:
        proc = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def dom(url: str, settle_ms: int = 0) -> str:
    """The page's DOM after Chromium loaded and rendered it (``settle_ms``: and let its
    scripts run that long, in virtual time, for pages that draw after loading)."""
    budget = [f"--virtual-time-budget={settle_ms}"] if settle_ms else []
    return _run(*budget, "--dump-dom", url)


def screenshot(url: str, path: Path) -> Path:
    _run(f"--screenshot={path}", url)
    return path


@contextmanager
def page() -> Iterator[Page]:
    """A page in Debian's Chromium driven by Playwright (clicks, typing, waiting), in a
    fresh profile; closed with the context."""
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(), args=[f for f in FLAGS if f != "--headless"]
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()
