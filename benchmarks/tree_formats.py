"""Opset-5 TreeEnsemble vs onnxmltools' older TreeEnsembleClassifier: file size, session creation, run time.

Fits one LightGBM binary classifier of realistic size on synthetic float32 rows (numeric and
categorical features, some NaN), converts it three ways (opset 5 with categorical splits as
set indicators, the default; opset 5 with ``BRANCH_MEMBER`` sets; onnxmltools' legacy form),
and prints one JSON document: the serialized size of each form, the median onnxruntime
session-creation time over --repeats runs (alternating the forms), the run time on the edge's
call shapes (8 and 20 rows of the test set, single thread), the ratios against the targets
(>= 2.5x smaller, >= 1.5x faster to create a session), each form's max abs difference from
LightGBM's probabilities, and the threshold flip report.

    .venv/bin/python benchmarks/tree_formats.py > tree_formats.json
    .venv/bin/python benchmarks/tree_formats.py --trees 5 --leaves 4 --rows 500 --repeats 3   # quick check
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort

from export.trees import legacy_onnx, lightgbm_to_onnx, threshold_report


def _data(rows: int, features: int, categorical: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    cats = list(range(features - categorical, features))
    for j, c in enumerate(cats):
        x[:, c] = rng.integers(0, 6 + 4 * j, rows)
    num = x[:, : features - categorical]
    num[rng.random(num.shape) < 0.05] = np.nan  # missing numeric values only (a view into x)
    w = rng.normal(size=features - categorical)
    logit = np.nan_to_num(x[:, : features - categorical]) @ w * 0.5
    for c in cats:
        logit += np.sin(x[:, c] * 1.7)
    y = (logit + rng.logistic(size=rows) > 0).astype(int)
    return x, y, cats


def _session_seconds(blob: bytes) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    start = time.perf_counter()
    ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    return time.perf_counter() - start


def _run_us(blob: bytes, x: np.ndarray, rows: int, calls: int) -> dict[str, float]:
    """µs per run on ``rows`` rows at a time, cycling through the test rows (varied inputs, as decisions are)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    batches = [np.ascontiguousarray(x[i:i + rows]) for i in range(0, len(x) - rows + 1, rows)]
    for batch in batches[:50]:
        sess.run(None, {"features": batch})
    ns = []
    for i in range(calls):
        feed = {"features": batches[i % len(batches)]}
        start = time.perf_counter_ns()
        sess.run(None, feed)
        ns.append(time.perf_counter_ns() - start)
    us = np.asarray(ns) / 1e3
    return {"p50": round(float(np.percentile(us, 50)), 2), "p99": round(float(np.percentile(us, 99)), 2)}


def _probability(blob: bytes, x: np.ndarray, legacy: bool) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # onnxmltools declares the label output as shape [1]: runtime warns on every run
    sess = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"features": x})
    return np.asarray(outs[1][:, 1] if legacy else outs[0])


def run(args: argparse.Namespace) -> dict[str, Any]:
    x, y, cats = _data(args.rows, args.features, args.categorical, args.seed)
    n_test = max(1, args.rows // 5)
    model = lgb.LGBMClassifier(objective="binary", n_estimators=args.trees, num_leaves=args.leaves,
                               learning_rate=0.05, min_child_samples=20, random_state=args.seed,
                               deterministic=True, force_row_wise=True, n_jobs=2, verbose=-1)
    print(f"fitting {args.trees} trees x {args.leaves} leaves on {args.rows} rows", file=sys.stderr)
    model.fit(x[n_test:], y[n_test:], categorical_feature=cats)
    names = [f"f{i}" for i in range(args.features)]
    new = lightgbm_to_onnx(model, names, kind="classifier", metadata={"carryon.family": "lightgbm"})
    member = lightgbm_to_onnx(model, names, kind="classifier", metadata={"carryon.family": "lightgbm"},
                              categorical="member")
    for proto in (new, member):
        onnx.checker.check_model(proto, full_check=True)
    old = legacy_onnx(model, args.features)
    protos = {"opset5": new, "opset5_member": member, "legacy": old}
    blobs = {form: proto.SerializeToString() for form, proto in protos.items()}
    times: dict[str, list[float]] = {form: [] for form in blobs}
    for _ in range(args.warmup):
        for blob in blobs.values():
            _session_seconds(blob)
    for i in range(args.repeats):
        order = list(blobs) if i % 2 == 0 else list(reversed(blobs))
        for form in order:
            times[form].append(_session_seconds(blobs[form]))
    test = np.ascontiguousarray(x[:n_test])
    truth = model.predict_proba(test)[:, 1]
    forms: dict[str, Any] = {}
    for form, proto in protos.items():
        forms[form] = {
            "operators": sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in proto.graph.node}),
            "opsets": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
            "bytes": len(blobs[form]),
            "session_create_ms_median": statistics.median(times[form]) * 1e3,
            "session_create_ms_min": min(times[form]) * 1e3,
            "run_us": {f"{rows}_rows": _run_us(blobs[form], test, rows, args.calls) for rows in (8, 20)},
            "max_abs_diff_vs_lightgbm": float(np.max(np.abs(_probability(blobs[form], test, form == "legacy")
                                                            - truth))),
        }
    size_ratio = forms["legacy"]["bytes"] / forms["opset5"]["bytes"]
    time_ratio = forms["legacy"]["session_create_ms_median"] / forms["opset5"]["session_create_ms_median"]
    member_run = {shape: forms["opset5_member"]["run_us"][shape]["p50"] / forms["opset5"]["run_us"][shape]["p50"]
                  for shape in forms["opset5"]["run_us"]}
    return {
        "benchmark": "tree_formats",
        "machine": {"python": platform.python_version(), "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                    "lightgbm": lgb.__version__},
        "model": {"trees": args.trees, "num_leaves": args.leaves, "features": args.features,
                  "categorical": args.categorical, "train_rows": args.rows - n_test, "test_rows": n_test,
                  "seed": args.seed},
        "repeats": args.repeats,
        "forms": forms,
        "size_ratio_legacy_over_opset5": size_ratio,
        "session_time_ratio_legacy_over_opset5": time_ratio,
        "size_ratio_legacy_over_opset5_member": forms["legacy"]["bytes"] / forms["opset5_member"]["bytes"],
        "session_time_ratio_legacy_over_opset5_member":
            forms["legacy"]["session_create_ms_median"] / forms["opset5_member"]["session_create_ms_median"],
        "run_time_ratio_member_over_indicator_p50": member_run,
        "targets": {"size_ratio_min": 2.5, "size_met": size_ratio >= 2.5,
                    "session_time_ratio_min": 1.5, "session_time_met": time_ratio >= 1.5},
        "thresholds": threshold_report(model, test),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--trees", type=int, default=200)
    p.add_argument("--leaves", type=int, default=31)
    p.add_argument("--features", type=int, default=21)
    p.add_argument("--categorical", type=int, default=4)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=21, help="session creations per form (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--calls", type=int, default=3000, help="timed runs per form and call shape")
    p.add_argument("--seed", type=int, default=20261127)
    args = p.parse_args(argv)
    try:
        result = run(args)
    except ModuleNotFoundError as e:
        if e.name != "onnxmltools":
            raise
        print("error: the older form is converted by onnxmltools, which is not installed: install the bench extra "
              "with pip install -e '.[bench]'", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
