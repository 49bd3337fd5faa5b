"""Golden-vector check across machines: outputs computed here must match those computed elsewhere.

On the build machine, ``make`` runs each model of an export dir (or bundle) on inputs drawn
from the feature spec and writes them with the outputs; on the device (or under qemu),
``check`` recomputes the outputs and compares within ``atol``. Prints one JSON document;
exit status 1 when any model disagrees. Base dependencies only.

    python -m benchmarks.device.golden make  --models data/export --out golden.json
    python -m benchmarks.device.golden check --models data/export --golden golden.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.device._errors import BenchError
from benchmarks.device._inputs import decision_pool, find_spec
from benchmarks.device._targets import Target, find_targets
from features._fsutil import atomic_write_text

ATOL = 1e-5
DECISIONS = 4  # decisions per model: 32 CTA rows, 80 bonus rows


def _outputs(target: Target, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(target.path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    output = next((n for n in ("probability", "score") if n in names), names[0])
    return np.asarray(session.run([output], {session.get_inputs()[0].name: inputs})[0], dtype=np.float64).ravel()


def make(models: Path, out: Path, spec: Path | None = None) -> dict[str, Any]:
    source, targets = find_targets([models], "both")
    feature_spec = find_spec(source.root, spec)
    cases = []
    for target in targets:
        pool = decision_pool(target.kind, feature_spec, pool=DECISIONS, seed=target.version)
        inputs = pool.reshape(-1, pool.shape[2])
        cases.append({"model": target.kind, "file": target.name, "inputs": inputs.tolist(),
                      "expected": _outputs(target, inputs).tolist()})
    golden = {"schema": 1, "atol": ATOL, "cases": cases}
    atomic_write_text(out, json.dumps(golden) + "\n")
    return {"golden": out.name, "cases": len(cases), "files": [c["file"] for c in cases]}


def check(models: Path, golden_path: Path) -> dict[str, Any]:
    try:
        golden = json.loads(golden_path.read_text(encoding="utf-8"))
        cases = {c["file"]: c for c in golden["cases"]}
        atol = float(golden["atol"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"{golden_path}: not golden vectors written by `golden make` ({e})") from e
    _, targets = find_targets([models], "both")
    results = []
    for target in targets:
        case = cases.get(target.name)
        if case is None:
            results.append({"file": target.name, "passed": False, "error": "no golden case for this file"})
            continue
        got = _outputs(target, np.asarray(case["inputs"], dtype=np.float32))
        diff = float(np.max(np.abs(got - np.asarray(case["expected"], dtype=np.float64))))
        results.append({"file": target.name, "rows": len(got), "max_abs_diff": diff,
                        "passed": bool(np.isfinite(diff) and diff <= atol)})
    missing = sorted(set(cases) - {t.name for t in targets})
    return {"atol": atol, "passed": all(r["passed"] for r in results) and not missing,
            "missing_files": missing, "models": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device.golden", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("make", "check"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--models", type=Path, required=True, help="export dir, bundle dir or dir of .onnx files")
        cmd.add_argument("--spec", type=Path, default=None, help="feature_spec.json (default: found beside models)")
    sub.choices["make"].add_argument("--out", type=Path, required=True)
    sub.choices["check"].add_argument("--golden", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        result = make(args.models, args.out, args.spec) if args.command == "make" else check(args.models, args.golden)
    except BenchError as e:
        print(f"golden: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0 if result.get("passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
