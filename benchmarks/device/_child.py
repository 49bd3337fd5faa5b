"""Measure one model in this process: ``python -m benchmarks.device._child JOB.json``.

The parent starts one child per model so the child's peak RSS (read by the parent with
``os.wait4``) is that of a process holding only that model. The job file names the model,
the settings and an ``.npz`` of inputs; the child prints one JSON object on stdout.
Imports numpy and onnxruntime only.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

MIN_TIMED = 100  # calls measured even when the time budget runs out first: a p99 needs them


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def _session(path: str, threads: int) -> tuple[ort.InferenceSession, float]:
    start = time.perf_counter()
    session = ort.InferenceSession(path, _options(threads), providers=["CPUExecutionProvider"])
    return session, (time.perf_counter() - start) * 1000.0


def _output_name(session: ort.InferenceSession) -> str:
    names = [o.name for o in session.get_outputs()]
    for preferred in ("probability", "score"):
        if preferred in names:
            return preferred
    return str(names[0])


class _Caller:
    """One decision call with pre-bound input and output buffers (the fastest path for tiny inputs)."""

    def __init__(self, session: ort.InferenceSession, shape: tuple[int, int]) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = _output_name(session)
        self.buffer = np.zeros(shape, dtype=np.float32)
        self.feed = {self.input_name: self.buffer}
        probe = session.run([self.output_name], self.feed)[0]
        self.out = np.empty_like(probe)
        self.api = "run_with_iobinding"
        try:
            binding = session.io_binding()
            binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(self.buffer))
            binding.bind_ortvalue_output(self.output_name, ort.OrtValue.ortvalue_from_numpy(self.out))
            session.run_with_iobinding(binding)  # no RunOptions: passing one costs ~30 µs a call
            self.binding = binding
        except (RuntimeError, AttributeError):  # a runtime without OrtValue binding: plain run
            self.api = "run"

    def __call__(self) -> None:
        if self.api == "run_with_iobinding":
            self.session.run_with_iobinding(self.binding)
        else:
            self.out[...] = self.session.run([self.output_name], self.feed)[0]


def _golden(caller_session: ort.InferenceSession, output: str, data: Any) -> dict[str, Any] | None:
    if "golden_inputs" not in data:
        return None
    inputs, expected = data["golden_inputs"], data["golden_expected"]
    got = np.asarray(caller_session.run([output], {caller_session.get_inputs()[0].name: inputs})[0],
                     dtype=np.float64).ravel()
    diff = float(np.max(np.abs(got - expected))) if len(expected) else 0.0
    if not np.isfinite(diff):  # NaN or inf outputs: a failure JSON can still hold
        diff = float(np.finfo(np.float64).max)
    atol = float(data["golden_atol"])
    return {"cases": len(expected), "max_abs_diff": diff, "atol": atol, "passed": bool(diff <= atol)}


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Session creation, warm-up, the timed loop and the golden check, for one model."""
    data = np.load(job["inputs"])
    pool = np.ascontiguousarray(data["pool"], dtype=np.float32)
    threads = int(job["threads"])
    creates = []
    session = None
    for _ in range(int(job["session_repeats"])):
        session = None  # drop the previous session before timing a fresh one
        session, ms = _session(job["model"], threads)
        creates.append(ms)
    assert session is not None
    width = session.get_inputs()[0].shape[-1]
    if isinstance(width, int) and width != pool.shape[2]:
        raise ValueError(f"model input has {width} features, the feature spec has {pool.shape[2]}; "
                         "bench the model with the feature spec it was exported with (--spec)")
    call = _Caller(session, (pool.shape[1], pool.shape[2]))
    buffer, n_pool = call.buffer, len(pool)
    for i in range(int(job["warmup"])):
        np.copyto(buffer, pool[i % n_pool])
        call()
    target, budget = int(job["min_iterations"]), float(job["time_budget_s"])
    times_ns: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(budget * 1e9)
    i = 0
    while i < target and (i < MIN_TIMED or clock() < deadline):
        np.copyto(buffer, pool[i % n_pool])
        t0 = clock()
        call()
        times_ns.append(clock() - t0)
        i += 1
    loop_s = (clock() - start) / 1e9
    us = np.asarray(times_ns, dtype=np.float64) / 1000.0
    return {
        "session_create_ms": statistics.median(creates),
        "session_create_first_ms": creates[0],
        "latency_us": {"p50": float(np.percentile(us, 50)), "p95": float(np.percentile(us, 95)),
                       "p99": float(np.percentile(us, 99)), "mean": float(us.mean())},
        "iterations": i,
        "time_budget_exhausted": i < target,
        "throughput_per_s": i / loop_s if loop_s > 0 else 0.0,
        "call_api": call.api,
        "output": call.output_name,
        "golden": _golden(session, call.output_name, data),
    }


def peak_rss_kib() -> int | None:
    """This process's own peak RSS: VmHWM of /proc/self/status (Linux, Android), or None.

    ``ru_maxrss`` cannot be used on Linux: the kernel carries the parent's peak into the
    child across fork and exec, so a large parent would inflate every child's figure.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        result = measure(job)
    except Exception as e:  # onnxruntime's errors are untyped; the parent shows this one line
        message = " ".join(str(e).split())
        sys.stderr.write(f"{type(e).__name__}: {message}\n")
        return 2
    result["vm_hwm_kib"] = peak_rss_kib()  # last: the peak of the whole measurement
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
