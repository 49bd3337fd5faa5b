"""What `carryon export` wrote, measured: file sizes, weight bytes and session-creation time per candidate.

Reads the export report (default ``metrics/export.json``) and the files it names under the
export dir (default ``data/export``). For every exported candidate and each of its files (float
ONNX, int8 ONNX where the candidate is a network, ORT format) it prints the file size, the weight
bytes (every initializer's values; for trees also the ``TreeEnsemble`` attribute tensors
``nodes_splits``, ``leaf_weights``, ``membership_values``; for networks also the layers' own
parameters) and the median onnxruntime session-creation time over ``--repeats`` runs (single
thread, files alternating forward and backward between runs), then the ratios float / int8 and
ONNX / ORT. Trees get a baseline measured in the same run: onnxmltools' older form
(``export.trees.legacy_onnx``) of the same LightGBM model, loaded from MLflow, and the ratios of our
opset-5 form against it, plus two bounds measured in the same loop: the ``TreeEnsemble`` node
alone with the model's metadata (what any opset-5 form of these trees must load) and an empty
session. Targets: opset-5 >= 2.5x smaller and >= 1.5x faster to create a session from than the
older form, each with the best ratio any opset-5 form could reach per candidate (``bound``) and
whether that reaches the target (``reachable``); int8 network layer weights >= 3.5x smaller.

Run from the project dir (MLflow is opened as `carryon` opens it: ``MLFLOW_TRACKING_URI`` or the
embedded store). Nothing here is random: the measurement order is fixed.

    .venv/bin/python benchmarks/export_sizes.py > export_sizes.json
    .venv/bin/python benchmarks/export_sizes.py --repeats 3 --warmup 0        # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

TREE_FAMILIES = ("lightgbm", "lambdarank")
TARGETS = {"tree_size_ratio_min": 2.5, "tree_session_time_ratio_min": 1.5, "int8_layer_weight_ratio_min": 3.5}


class BenchmarkInputError(RuntimeError):
    """The export report or a file it names is missing or unreadable."""


def weight_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Initializer bytes, TreeEnsemble attribute-tensor bytes, their sum; layer bytes for networks."""
    from export._graph import initializer_bytes, layer_weight_bytes, tree_tensor_bytes

    init, tree = initializer_bytes(model), tree_tensor_bytes(model)
    out = {"initializer_bytes": init, "tree_tensor_bytes": tree, "weight_bytes": init + tree}
    if any(node.op_type == "MatMul" for node in model.graph.node):
        out["layer_bytes"] = layer_weight_bytes(model)
    return out


def legacy_weight_bytes(model: onnx.ModelProto) -> int:
    """The older form's thresholds and leaf values (float lists of 4 bytes each), the analogue of ours."""
    total = 0
    for node in model.graph.node:
        if node.op_type.startswith("TreeEnsemble"):
            for attr in node.attribute:
                if attr.name in ("nodes_values", "class_weights", "target_weights"):
                    total += 4 * len(attr.floats)
    return total


def session_seconds(blob: bytes) -> float:
    """Wall seconds to create one single-threaded CPU session from the serialized model."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # onnxmltools' label output shape makes the runtime warn
    start = time.perf_counter()
    ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    return time.perf_counter() - start


def time_forms(blobs: dict[str, bytes], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Session-creation seconds per form; the order of the forms alternates between runs."""
    order = list(blobs)
    for _ in range(warmup):
        for form in order:
            session_seconds(blobs[form])
    times: dict[str, list[float]] = {form: [] for form in order}
    for i in range(repeats):
        for form in order if i % 2 == 0 else reversed(order):
            times[form].append(session_seconds(blobs[form]))
    return times


def _read(export_dir: Path, relative: str, what: str) -> bytes:
    path = export_dir / relative
    try:
        return path.read_bytes()
    except OSError as e:
        raise BenchmarkInputError(f"{relative} (the {what} file the export report names) cannot be read under "
                                  f"--export-dir: {e.strerror}; run `carryon export` again or pass the export "
                                  "dir that report belongs to") from e


def _legacy_model(name: str, version: int, n_features: int, project: Path) -> onnx.ModelProto:
    import mlflow

    from export.trees import legacy_onnx
    from pipeline.tracking import open_tracking

    open_tracking(project, os.environ)  # sets the tracking URI the way `carryon` does
    native = mlflow.lightgbm.load_model(f"models:/{name}/{version}")
    try:
        return legacy_onnx(native, n_features)
    except ModuleNotFoundError as e:
        raise BenchmarkInputError(f"the older-form baseline needs onnxmltools (missing module {e.name!r}): install "
                                  "the bench extra with pip install -e '.[bench]', or pass --no-baseline") from None


def bare_tree_op(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model's ``TreeEnsemble`` node alone, fed its input directly, with the model's metadata.

    An exported model must carry its metadata (feature names, spec hash) and every opset-5
    encoding of these trees loads at least this operator (the ``BRANCH_MEMBER`` form more:
    onnxruntime unrolls a set into equality nodes, copying the subtree below each), so
    legacy / bare bounds the size and session-time ratios any such form could reach.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    node = next(n for n in inferred.graph.node if n.op_type == "TreeEnsemble")
    typed = {v.name: v for v in (*inferred.graph.input, *inferred.graph.value_info)}
    source = typed[node.input[0]]
    out = onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph([node], "bare_tree_op", [source], [out])
    bare = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    bare.metadata_props.extend(model.metadata_props)
    return bare


def empty_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """One ``Identity`` on the model's input: what creating any session of that input costs here."""
    source = model.graph.input[0]
    out = onnx.helper.make_tensor_value_info("same", onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", [source.name], ["same"])], "empty",
                                   [source], [out])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)],
                                  ir_version=model.ir_version)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def measure_candidate(entry: dict[str, Any], export_dir: Path, project: Path, args: argparse.Namespace
                      ) -> dict[str, Any]:
    """Sizes, weight bytes, session times and ratios of one exported version (and its baseline)."""
    name, version, family = entry["name"], int(entry["version"]), entry["family"]
    files: dict[str, str] = entry["files"]
    print(f"measuring {name} v{version} ({family})", file=sys.stderr)
    roles: tuple[str, ...] = ("onnx", "int8_onnx", "ort")
    blobs = {role: _read(export_dir, files[role], role) for role in roles if role in files}
    forms: dict[str, Any] = {}
    for role, blob in blobs.items():
        forms[role] = {"file": files[role], "bytes": len(blob)}
        if role != "ort":
            forms[role].update(weight_bytes(onnx.load_model_from_string(blob)))
    is_tree = family in TREE_FAMILIES
    baseline: dict[str, Any] | None = None
    if is_tree and not args.no_baseline:
        model = onnx.load_model_from_string(blobs["onnx"])
        n_features = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
        legacy = _legacy_model(name, version, n_features, project)
        blobs["legacy"] = legacy.SerializeToString()
        blobs["bare"] = bare_tree_op(model).SerializeToString()
        blobs["empty"] = empty_model(model).SerializeToString()
        baseline = {"form": "onnxmltools " + "/".join(sorted({n.op_type for n in legacy.graph.node
                                                               if n.domain == "ai.onnx.ml"})),
                    "opsets": {o.domain or "ai.onnx": o.version for o in legacy.opset_import},
                    "bytes": len(blobs["legacy"]), "weight_bytes": legacy_weight_bytes(legacy)}
    times = time_forms(blobs, args.repeats, args.warmup)
    for role, ts in times.items():
        figures = {"session_create_ms_median": statistics.median(ts) * 1e3, "session_create_ms_min": min(ts) * 1e3}
        if role == "legacy" and baseline is not None:
            baseline.update(figures)
        elif role in ("bare", "empty") and baseline is not None:
            baseline.setdefault("bounds", {})[role] = {"bytes": len(blobs[role]), **figures}
        else:
            forms[role].update(figures)
    ort_source = "int8_onnx" if "int8_onnx" in forms else "onnx"
    ratios: dict[str, Any] = {
        "ort_source": ort_source,
        "onnx_over_ort_session_time": _ratio(forms[ort_source]["session_create_ms_median"],
                                             forms["ort"]["session_create_ms_median"]) if "ort" in forms else None,
    }
    if "int8_onnx" in forms:
        f, q = forms["onnx"], forms["int8_onnx"]
        ratios.update(float_over_int8_bytes=_ratio(f["bytes"], q["bytes"]),
                      float_over_int8_weight_bytes=_ratio(f["weight_bytes"], q["weight_bytes"]),
                      float_over_int8_layer_bytes=_ratio(f.get("layer_bytes"), q.get("layer_bytes")),
                      float_over_int8_session_time=_ratio(f["session_create_ms_median"],
                                                          q["session_create_ms_median"]))
    out: dict[str, Any] = {"name": name, "version": version, "family": family,
                           "kind": "tree" if is_tree else "network" if "int8_onnx" in forms else "linear",
                           "gates_passed": entry.get("passed"), "files": forms, "ratios": ratios}
    if baseline is not None:
        ours = forms["onnx"]
        baseline["size_ratio_legacy_over_opset5"] = _ratio(baseline["bytes"], ours["bytes"])
        baseline["weight_ratio_legacy_over_opset5"] = _ratio(baseline["weight_bytes"], ours["weight_bytes"])
        baseline["session_time_ratio_legacy_over_opset5"] = _ratio(baseline["session_create_ms_median"],
                                                                   ours["session_create_ms_median"])
        bounds = baseline["bounds"]
        bounds["bare"]["what"] = "our TreeEnsemble node alone with the model's metadata: no preprocessing or reshape"
        bounds["empty"]["what"] = "one Identity on the same input: the cost of any session here"
        bounds["size_ratio_legacy_over_bare"] = _ratio(baseline["bytes"], bounds["bare"]["bytes"])
        bounds["session_time_ratio_legacy_over_bare"] = _ratio(baseline["session_create_ms_median"],
                                                               bounds["bare"]["session_create_ms_median"])
        bounds["session_time_ratio_legacy_over_empty"] = _ratio(baseline["session_create_ms_median"],
                                                                bounds["empty"]["session_create_ms_median"])
        if "ort" in forms:
            baseline["session_time_ratio_legacy_over_ort"] = _ratio(baseline["session_create_ms_median"],
                                                                     forms["ort"]["session_create_ms_median"])
        out["baseline"] = baseline
    return out


def _judge(values: dict[str, float | None], minimum: float,
           bounds: dict[str, float | None] | None = None) -> dict[str, Any]:
    """``pass`` over every measured value; with ``bounds`` (the best ratio any form could reach per
    candidate) also whether the target is within reach of each, judged the same way."""
    measured = [v for v in values.values() if v is not None]
    out: dict[str, Any] = {"target": f">= {minimum}x", "measured": values,
                           "pass": None if not measured else all(v >= minimum for v in measured)}
    if bounds is not None:
        out["bound"] = bounds
        out["reachable"] = {k: None if b is None else b >= minimum for k, b in bounds.items()}
    return out


def targets(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target judged over every candidate it applies to; ``pass`` is null when none does."""
    trees = [c for c in candidates if "baseline" in c]
    nets = [c for c in candidates if "float_over_int8_layer_bytes" in c.get("ratios", {})]
    key = "{name} v{version}".format
    return {
        "tree_size_vs_legacy": _judge(
            {key(**c): c["baseline"]["size_ratio_legacy_over_opset5"] for c in trees}, TARGETS["tree_size_ratio_min"],
            {key(**c): c["baseline"]["bounds"]["size_ratio_legacy_over_bare"] for c in trees}),
        "tree_session_time_vs_legacy": _judge(
            {key(**c): c["baseline"]["session_time_ratio_legacy_over_opset5"] for c in trees},
            TARGETS["tree_session_time_ratio_min"],
            {key(**c): c["baseline"]["bounds"]["session_time_ratio_legacy_over_bare"] for c in trees}),
        "int8_layer_weights_vs_float": _judge({key(**c): c["ratios"]["float_over_int8_layer_bytes"] for c in nets},
                                              TARGETS["int8_layer_weight_ratio_min"]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
        entries = report["versions"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchmarkInputError(f"{args.report.name}: no readable export report with a 'versions' list ({e}); "
                                  "run `carryon export` first or pass --report") from e
    candidates = [measure_candidate(entry, args.export_dir, args.project, args) for entry in entries]
    import importlib.metadata

    import lightgbm

    def installed(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "benchmark": "export_sizes",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "onnxruntime": ort.__version__,
                    "onnx": onnx.__version__, "onnxmltools": installed("onnxmltools"),
                    "lightgbm": lightgbm.__version__, "numpy": np.__version__},
        "repeats": args.repeats, "warmup": args.warmup, "threads": 1,
        "candidates": candidates,
        "targets": targets(candidates),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--report", type=Path, default=Path("metrics/export.json"), help="export report (JSON)")
    p.add_argument("--export-dir", type=Path, default=Path("data/export"), help="dir the report's files are under")
    p.add_argument("--project", type=Path, default=Path("."), help="project dir (for the embedded MLflow store)")
    p.add_argument("--repeats", type=int, default=21, help="session creations per file (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed session creations per file first")
    p.add_argument("--no-baseline", action="store_true", help="skip the onnxmltools baseline (no MLflow needed)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    try:
        result = run(args)
    except BenchmarkInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
