"""Headless Chromium for tests: find it, install it (Debian's ``chromium``) when missing, render pages.

``ensure_chromium()`` returns the browser's path. When it is missing and this process
runs as root with apt-get, it runs ``apt-get update`` and ``apt-get install -y
--no-install-recommends chromium`` once, under a file lock, so parallel test runs do not
collide; otherwise it fails the test with the command that installs it. The ``chromium``
fixture does this once per test session.

    >>> dom = dump_dom(ensure_chromium(), page, profile_dir)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

import pytest
from debian import ProgramMissing, ensure_program, find_program

PACKAGE: Final = "chromium"  # Debian's package; it installs /usr/bin/chromium
NAMES: Final = ("chromium", "chromium-browser")
DEFAULT_PATH: Final = Path("/usr/bin/chromium")
RENDER_TIMEOUT_S: Final = 120.0
# Quiet, offline, throw-away browser: no sandbox (root in a container), no GPU, no network chatter.
FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
)


class ChromiumMissing(RuntimeError):
    """Chromium is not installed and could not be installed here."""


def find_chromium() -> str | None:
    """The Chromium executable on this machine, or None."""
    return find_program(NAMES, (DEFAULT_PATH,))


def ensure_chromium() -> str:
    """Chromium's path; installs Debian's package (as root, with apt-get) under a lock when missing."""
    try:
        return ensure_program(NAMES, PACKAGE, "to render the creator report", (DEFAULT_PATH,))
    except ProgramMissing as e:
        raise ChromiumMissing(str(e)) from None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of headless Chromium, installed once per test session if missing; fails (not skips) if impossible."""
    try:
        return ensure_chromium()
    except ChromiumMissing as e:
        pytest.fail(str(e), pytrace=False)


def _render(chromium: str, page: Path, profile_dir: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    profile_dir.mkdir(parents=True, exist_ok=True)
    command = [chromium, *FLAGS, f"--user-data-dir={profile_dir}", *extra, page.resolve().as_uri()]
    env = {**os.environ, "HOME": str(profile_dir)}  # keep the browser's caches out of the real home
    try:
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=RENDER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not render {page.name} within {RENDER_TIMEOUT_S:g} s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"chromium failed on {page.name} (exit {done.returncode}): {done.stderr[-2000:]}", pytrace=False)
    return done


def dump_dom(chromium: str, page: Path, profile_dir: Path) -> str:
    """The DOM of ``page`` after it loaded and its scripts ran (``--dump-dom``)."""
    return _render(chromium, page, profile_dir, ["--virtual-time-budget=5000", "--dump-dom"]).stdout


def screenshot(chromium: str, page: Path, profile_dir: Path, out: Path, *, width: int = 1200,
               height: int = 2400) -> Path:
    """A PNG screenshot of ``page`` (``--blink-settings=scriptEnabled=false`` stops headless screenshots:
    check a page's independence from JavaScript on its source instead)."""
    extra = [f"--screenshot={out}", f"--window-size={width},{height}", "--virtual-time-budget=5000"]
    _render(chromium, page, profile_dir, extra)
    if not out.is_file() or out.stat().st_size == 0:
        pytest.fail(f"chromium wrote no screenshot of {page.name}", pytrace=False)
    return out
