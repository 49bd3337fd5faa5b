"""Run the measuring child for one model, in its own process, and collect its figures.

The peak RSS is the child's own high-water mark (``VmHWM``, which the child reads as its
last act). The ``ru_maxrss`` that ``os.wait4`` returns is only the fallback where ``/proc``
is missing (macOS): on Linux the kernel carries the parent's peak into it across fork and
exec, so it would report the job's own memory for every model.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.device._errors import BenchError

CHILD_PYTHON_ENV = "CARRYON_BENCH_PYTHON"
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the dir holding benchmarks/ (a checkout or site-packages)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(_PACKAGE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _python() -> list[str]:
    """The child's interpreter: this one, or $CARRYON_BENCH_PYTHON.

    Under qemu-user without binfmt an emulated Python cannot exec itself, so the qemu
    script sets the variable to ``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11``.
    """
    command = os.environ.get(CHILD_PYTHON_ENV, "").strip()
    return shlex.split(command) if command else [sys.executable]


def run_child(model: Path, job: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Measure ``model`` in a fresh interpreter; returns the child's figures plus ``peak_rss_mib``."""
    if not hasattr(os, "wait4"):
        raise BenchError("this platform has no os.wait4: run the benchmark job on Linux, Android or macOS")
    with tempfile.TemporaryDirectory(prefix="carryon-bench-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        payload: dict[str, Any] = dict(arrays)
        np.savez(inputs, **payload)
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps({**job, "model": str(model.resolve()), "inputs": str(inputs)}), encoding="utf-8")
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            argv = [*_python(), "-m", "benchmarks.device._child", str(job_file)]
            try:
                proc = subprocess.Popen(argv, stdout=out, stderr=err, env=_env(), cwd=tmp)
            except OSError as e:
                raise BenchError(f"cannot start the measuring process {argv[0]!r} ({e.strerror}); "
                                 f"check ${CHILD_PYTHON_ENV}") from e
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        raise BenchError(f"{model}: measuring failed (exit status {proc.returncode}): "
                         f"{lines[-1][:600] if lines else 'no message'}")
    try:
        result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise BenchError(f"{model}: the measuring process printed no result ({stderr.strip()[-300:]})") from e
    own = result.pop("vm_hwm_kib", None)
    # ru_maxrss includes the parent's peak on Linux (carried across fork and exec): only a fallback.
    result["peak_rss_mib"] = own / 1024 if isinstance(own, int) and own > 0 else usage.ru_maxrss * _RSS_UNIT / 2**20
    return result
