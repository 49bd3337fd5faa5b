"""Programs from Debian's packages for tests: find one, or install its package when missing.

``ensure_program`` returns the executable's path. When it is missing and this process runs as
root with apt-get, it runs ``apt-get update`` and ``apt-get install -y --no-install-recommends
PACKAGE`` once, under a file lock, so parallel test runs do not collide; otherwise it raises
:class:`ProgramMissing` with the command that installs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

INSTALL_TIMEOUT_S: Final = 1200.0  # apt-get update + install on a slow mirror


class ProgramMissing(RuntimeError):
    """The program is not installed and could not be installed here."""


def find_program(names: Sequence[str], paths: Sequence[Path] = ()) -> str | None:
    """The first executable among ``paths`` and ``names`` on PATH, or None."""
    for path in paths:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_program(names: Sequence[str], package: str, why: str, paths: Sequence[Path] = ()) -> str:
    """The program's path; installs Debian's ``package`` (as root, with apt-get) under a lock when missing."""
    how = (f"install Debian's {package} package: `sudo apt-get update && sudo apt-get install -y "
           f"--no-install-recommends {package}` (or run the tests as root, which installs it automatically)")
    found = find_program(names, paths)
    if found:
        return found
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        reason = "apt-get is not available" if apt_get is None else "the tests do not run as root"
        raise ProgramMissing(f"{names[0]} is needed {why}, and {reason}: {how}")
    with _install_lock(package):
        found = find_program(names, paths)  # another process may have installed it while we waited
        if found:
            return found
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        wait = ("-o", "DPkg::Lock::Timeout=600")  # wait for another apt/dpkg instead of failing
        for command in ([apt_get, *wait, "update"],
                        [apt_get, *wait, "install", "-y", "--no-install-recommends", package]):
            _run_install_step(command, env, how)
    found = find_program(names, paths)
    if found is None:
        raise ProgramMissing(f"apt-get installed {package} but no {names[0]} executable was found; {how}")
    return found


def _run_install_step(command: list[str], env: dict[str, str], how: str) -> None:
    shown = " ".join(["apt-get", *command[1:]])
    try:
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ProgramMissing(f"`{shown}` did not finish in {INSTALL_TIMEOUT_S:g} s; {how}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        raise ProgramMissing(f"`{shown}` failed (exit {done.returncode}): {tail}\n{how}")


@contextlib.contextmanager
def _install_lock(package: str) -> Iterator[None]:
    # One lock for every package: apt-get itself allows one install at a time.
    path = Path(tempfile.gettempdir()) / "carryon-apt-install.lock"
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
