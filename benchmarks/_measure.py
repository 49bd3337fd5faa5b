"""Run one command in a child process and measure its wall time and peak RSS.

The command's peak resident set size is ``ru_maxrss`` from ``os.wait4`` (KiB on Linux).
Linux carries a parent's peak into a child it starts (``execve`` keeps the larger of the
child's own peak and the address space it replaced, which a fork or vfork shares with
the parent), so a command started straight from a benchmark that had grown to 600 MiB
would report 600 MiB however little it used. The command is therefore started by a
small trampoline (a fresh ``python -S -I``, about 10 MiB) that reaps it and reports its
rusage: the figure is the command's own, with that floor. Shared by the benchmarks in
this folder.

    >>> run = measure([sys.executable, "-c", "print(1)"])
    >>> run.ok, run.stdout.strip()
    (True, '1')
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
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


# Runs argv[2:], reaps it with wait4 and writes "returncode wall_s maxrss_kib user_s sys_s" to argv[1].
_TRAMPOLINE = """
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {wall!r} {usage.ru_maxrss} {usage.ru_utime!r} {usage.ru_stime!r}")
"""


def measure(
    argv: Sequence[str], *, cwd: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Measured:
    """Run ``argv`` to completion; stdout and stderr go to temp files (no pipe deadlocks)."""
    args = tuple(str(a) for a in argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rusage"
        trampoline = [sys.executable, "-S", "-I", "-c", _TRAMPOLINE, str(result), *args]
        proc = subprocess.run(trampoline, cwd=cwd, env=None if env is None else dict(env), stdout=out, stderr=err,
                              check=False)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        if proc.returncode != 0 or not result.exists():  # the trampoline itself failed (e.g. argv[0] not found)
            return Measured(argv=args, returncode=proc.returncode or 1, wall_s=0.0,
                            peak_rss_bytes=0, user_s=0.0, sys_s=0.0, stdout=stdout, stderr=stderr)
        code, wall, maxrss, user, system = result.read_text().split()
    return Measured(
        argv=args,
        returncode=int(code),
        wall_s=float(wall),
        peak_rss_bytes=int(maxrss) * _KIB,
        user_s=float(user),
        sys_s=float(system),
        stdout=stdout,
        stderr=stderr,
    )
