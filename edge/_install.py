"""The last steps of a pull: the golden vectors in a child process, then the crash-safe switch of ``current``.

Order (each step durable before the next): files fsynced -> ``.tmp-<version>`` renamed to ``<version>`` ->
``current/<creator>`` replaced by a new symlink (temp name + ``os.replace`` + fsync of ``current/``). A kill at
any instant leaves ``current`` on the old or the new version, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge.client_errors import PullRefused
from edge.home import EdgeHome
from features._fsutil import fsync_dir

__all__ = ["install_bundle", "prune_versions", "run_golden_child"]


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def run_golden_child(bundle_dir: Path, timeout_s: float, command: list[str] | None = None) -> dict[str, Any]:
    """Run ``python -m edge.golden DIR`` in a child; a crash, a timeout or a disagreement refuses the bundle."""
    argv = (command or [sys.executable, "-m", "edge.golden"]) + [str(bundle_dir)]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PullRefused(f"golden vectors did not finish within {timeout_s:g} s on this device") from None
    except OSError as e:
        raise PullRefused(f"cannot start the golden check ({e.strerror})") from None
    stderr = done.stderr.decode("utf-8", "replace").strip().splitlines()
    last = stderr[-1][:300] if stderr else ""
    report: dict[str, Any] = {}
    try:
        parsed = json.loads(done.stdout.decode("utf-8", "replace") or "{}")
        report = parsed if isinstance(parsed, dict) else {}
    except ValueError:
        pass
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else "?"
        raise PullRefused(f"golden check crashed on this device (signal {name}){': ' + last if last else ''}")
    if done.returncode == 1:
        listed = report.get("failures")
        failures: list[Any] = listed if isinstance(listed, list) else []
        why = report.get("error") or (str(failures[0]) if failures else "") or last or "outputs differ from golden.json"
        if len(failures) > 1:
            why += f" (and {int(report.get('failed') or len(failures)) - 1} more)"
        raise PullRefused(f"golden vectors disagree on this device: {why}")
    if done.returncode != 0:
        raise PullRefused(f"golden check failed (exit {done.returncode}){': ' + last if last else ''}")
    return report


def install_bundle(home: EdgeHome, creator: str, version: int, staged: Path) -> Path:
    """Make the verified ``staged`` directory version ``version`` and point ``current/<creator>`` at it."""
    bundles = home.bundles(creator)
    final = bundles / str(version)
    _fsync_tree(staged)
    if final.exists():
        # Left by a pull killed after the rename and before the switch: never current, safe to replace.
        if home.installed_version(creator) == version:
            raise PullRefused(f"version {version} of {creator} is already current; nothing to install")
        shutil.rmtree(final)
    os.replace(staged, final)
    fsync_dir(bundles)
    home.current.mkdir(parents=True, exist_ok=True)
    tmp = home.current / f".{creator}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("..", "bundles", creator, str(version)), tmp)
    os.replace(tmp, home.current / creator)
    fsync_dir(home.current)
    return final


def prune_versions(home: EdgeHome, creator: str, keep: int = 2) -> list[int]:
    """Remove all but the newest ``keep`` installed versions (the current one always stays); return removed."""
    bundles = home.bundles(creator)
    current = home.installed_version(creator)
    versions = sorted((int(p.name) for p in bundles.iterdir() if p.name.isdigit()), reverse=True)
    removed = []
    for version in versions[keep:]:
        if version != current:
            shutil.rmtree(bundles / str(version), ignore_errors=True)
            removed.append(version)
    for stale in bundles.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return removed
