"""Run a bundle's golden vectors on this device's onnxruntime, in both the ONNX and the ORT form.

``check_golden(bundle_dir)`` returns {"ok", "cases", "checks", "max_abs_diff", "failures", ...}: ok only
if every case's outputs agree with the expected ones within the file's ``atol`` for both forms.
``python -m edge.golden BUNDLE_DIR`` prints that as JSON and exits 0 (all agree) or 1 (disagree, or
the bundle cannot be checked); the edge client runs it in a child process, so a model that crashes
the runtime takes down only the child. Device-side: base dependencies only.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from features.errors import CarryonError

GOLDEN: Final = "golden.json"
MANIFEST: Final = "manifest.json"
SCHEMA: Final = 1
_MAX_REPORTED: Final = 10


class GoldenError(CarryonError):
    """golden.json or a model it names cannot be read or run."""


def _load(bundle_dir: Path, name: str) -> Any:
    try:
        return json.loads((bundle_dir / name).read_bytes())
    except (OSError, ValueError) as e:
        raise GoldenError(f"{name}: cannot read it ({e}); the bundle is damaged") from None


def _golden(bundle_dir: Path) -> tuple[float, list[dict[str, Any]]]:
    data = _load(bundle_dir, GOLDEN)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise GoldenError(f"{GOLDEN}: field 'schema' must be {SCHEMA}")
    atol = data.get("atol")
    if isinstance(atol, bool) or not isinstance(atol, int | float) or not (math.isfinite(atol) and atol >= 0):
        raise GoldenError(f"{GOLDEN}: field 'atol' must be a finite number >= 0, got {atol!r}")
    cases = data.get("cases")
    if not isinstance(cases, list):
        raise GoldenError(f"{GOLDEN}: field 'cases' must be a list")
    return float(atol), cases


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # the boundary: onnxruntime raises its own Fail/InvalidGraph/... types
        raise GoldenError(f"{path.parent.name}/{path.name}: onnxruntime cannot load it ({e})") from None


def _case_arrays(i: int, case: Any) -> tuple[str, np.ndarray, np.ndarray]:
    if not isinstance(case, dict) or case.get("model") not in ("cta", "bonus-ranker"):
        raise GoldenError(f"{GOLDEN}: cases[{i}].model must be 'cta' or 'bonus-ranker'")
    try:
        x = np.asarray(case["inputs"], dtype=np.float32)
        expected = np.asarray(case["expected"], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError) as e:
        raise GoldenError(
            f"{GOLDEN}: cases[{i}] needs numeric 'inputs' [[...], ...] and 'expected' [...] ({e})") from None
    if x.ndim != 2 or len(x) != len(expected):
        raise GoldenError(f"{GOLDEN}: cases[{i}] has inputs of shape {x.shape} and {len(expected)} expected values")
    return str(case["model"]), x, expected


def check_golden(bundle_dir: Path) -> dict[str, Any]:
    """Run every golden case on both model forms; report agreement (``ok``) and the largest difference."""
    bundle_dir = Path(bundle_dir)
    manifest = _load(bundle_dir, MANIFEST)
    models: Mapping[str, Any] = manifest.get("models", {}) if isinstance(manifest, dict) else {}
    atol, cases = _golden(bundle_dir)
    sessions: dict[tuple[str, str], Any] = {}
    failures: list[str] = []
    max_diff: dict[str, float] = {}
    checks = 0
    for i, case in enumerate(cases):
        kind, x, expected = _case_arrays(i, case)
        entry = models.get(kind)
        if not isinstance(entry, dict):
            raise GoldenError(f"{GOLDEN}: cases[{i}] is for model {kind!r}, which the manifest does not ship")
        for form in ("file", "ort_file"):
            rel = str(entry.get(form))
            if (kind, form) not in sessions:
                sessions[kind, form] = _session(bundle_dir / rel)
            session = sessions[kind, form]
            checks += 1
            try:
                (output,) = session.run(None, {session.get_inputs()[0].name: x})
            except Exception as e:  # the boundary: onnxruntime's own error types
                failures.append(f"case {i} ({rel}): onnxruntime failed ({str(e).splitlines()[0] if str(e) else e})")
                continue
            got = np.asarray(output, dtype=np.float64).reshape(-1)
            if got.shape != expected.shape:
                failures.append(f"case {i} ({rel}): {got.size} outputs, expected {expected.size}")
                continue
            diff = np.abs(got - expected)
            worst = float(np.max(diff)) if diff.size else 0.0
            if not np.all(np.isfinite(got)):
                worst = math.inf
            max_diff[rel] = max(max_diff.get(rel, 0.0), worst)
            if worst > atol:
                failures.append(f"case {i} ({rel}): max |diff| {worst:.3g} > atol {atol:g}")
    return {"ok": not failures, "cases": len(cases), "checks": checks, "atol": atol,
            "max_abs_diff": {k: (v if math.isfinite(v) else None) for k, v in sorted(max_diff.items())},
            "failures": failures[:_MAX_REPORTED], "failed": len(failures)}


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.golden BUNDLE_DIR``: print the result as JSON; 0 if every case agrees, else 1."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(json.dumps({"ok": False, "error": "usage: python -m edge.golden BUNDLE_DIR"}))
        return 1
    try:
        result = check_golden(Path(args[0]))
    except CarryonError as e:
        result = {"ok": False, "error": str(e)}
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
