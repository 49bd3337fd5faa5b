"""Installing a Debian package for tests (tests/debian.py), without touching the machine."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import browser
import debian
import pytest


def test_without_root_or_apt_the_install_fails_with_the_command_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian, "find_program", lambda names, paths=(): None)
    monkeypatch.setattr(debian.os, "geteuid", lambda: 1000)
    with pytest.raises(debian.ProgramMissing, match=r"do not run as root.*apt-get install -y --no-inst.* nginx"):
        debian.ensure_program(["nginx"], "nginx", "to serve mirrors")
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(browser.ChromiumMissing, match="apt-get is not available"):
        browser.ensure_chromium()


def test_as_root_the_install_runs_apt_get_under_the_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    installed: list[bool] = []
    commands: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        if command[-1] == "chromium":
            installed.append(True)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(debian, "find_program", lambda names, paths=(): "/usr/bin/chromium" if installed else None)
    monkeypatch.setattr(debian.os, "geteuid", lambda: 0)
    monkeypatch.setattr(debian.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(debian.subprocess, "run", run)
    monkeypatch.setattr(debian.tempfile, "gettempdir", lambda: str(tmp_path))
    assert browser.ensure_chromium() == "/usr/bin/chromium"
    assert [c[-1] for c in commands] == ["update", "chromium"]
    assert commands[1][-4:] == ["install", "-y", "--no-install-recommends", "chromium"]
    assert (tmp_path / "carryon-apt-install.lock").exists()

    installed.clear()
    monkeypatch.setattr(debian.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 100, "", "E: Unable to locate"))
    with pytest.raises(browser.ChromiumMissing, match=r"`apt-get .* update` failed \(exit 100\): E: Unable to locate"):
        browser.ensure_chromium()
