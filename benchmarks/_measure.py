"""Run one command in a child process and measure its wall time and peak RSS.

The child is reaped with ``os.wait4``, whose rusage gives the child's own peak resident
set size (``ru_maxrss``, KiB on Linux), so the figure belongs to the command alone and
not to the benchmark process. Shared by the benchmarks in this folder.

    >>> run = measure([sys.executable, "-c", "print(1)"])
    >>> run.ok, run.stdout.strip()
    (True, '1')
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_KIB = 1024 if sys.platform != "darwin" else 1  # macOS reports ru_maxrss in bytes


@dataclass(frozen=True)
class Measured:
    """Outcome of one measured child process."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float  # seconds from spawn to reap
    peak_rss_bytes: int  # ru_maxrss of the child
    user_s: float  # CPU seconds in user mode
    sys_s: float  # CPU seconds in kernel mode
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / 2**20

    def check(self, what: str) -> Measured:
        """Return self, or raise RuntimeError naming ``what`` with the tail of its stderr."""
        if not self.ok:
            tail = "\n".join(self.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{what} failed with exit status {self.returncode}:\n{tail}")
        return self


def measure(
    argv: Sequence[str], *, cwd: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Measured:
    """Run ``argv`` to completion; stdout and stderr go to temp files (no pipe deadlocks)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else dict(env), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return Measured(
        argv=tuple(str(a) for a in argv),
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss_bytes=int(usage.ru_maxrss) * _KIB,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        stdout=stdout,
        stderr=stderr,
    )
