"""The model versions a bundle ships: the ones carrying an alias, checked against their export.

A version qualifies when it carries the alias, its export gates passed (tag ``carryon.gates``),
and its deployed file exists with the sha256 of tag ``carryon.deploy_sha256``. What the manifest
says about it (offline metrics, benchmarks, training lineage, operators) is gathered here too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import onnx

from features.errors import CarryonError

if TYPE_CHECKING:
    from mlflow import MlflowClient

REGISTERED: Final = {"cta": "cta", "bonus-ranker": "bonus-ranker"}  # bundle kind -> registered model
OUTPUTS: Final = {"cta": "probability", "bonus-ranker": "score"}
TAG_GATES: Final = "carryon.gates"
TAG_DEPLOY_SHA: Final = "carryon.deploy_sha256"
BENCH_PREFIX: Final = "carryon.bench."
_LINEAGE_KEYS: Final = ("git_commit", "data_sha256", "params_sha256")
_NOT_METRICS: Final = ("gate_", "size_")  # export figures logged as run metrics, not model quality


class BundleBuildError(CarryonError):
    """A bundle cannot be built from what the registry and the export hold."""


@dataclass(frozen=True)
class ShippedModel:
    """One model version going into a bundle, with what the manifest records about it."""

    kind: str  # "cta" | "bonus-ranker"
    name: str  # registered model
    version: int
    family: str
    onnx_path: Path
    ort_path: Path
    quantization: str  # "none" | "int8-qdq" | "int8-weights" (activations float) | "int8-dynamic"
    metrics: dict[str, float]
    benchmarks: dict[str, Any]
    lineage: dict[str, str]

    def manifest_entry(self, sha256: str, size: int, ort_sha256: str) -> dict[str, Any]:
        model = onnx.load(str(self.onnx_path), load_external_data=False)
        output = model.graph.output[0].name if model.graph.output else OUTPUTS[self.kind]
        return {
            "file": f"models/{self.kind}.onnx", "ort_file": f"models/{self.kind}.ort", "sha256": sha256,
            "size": size, "ort_sha256": ort_sha256, "opset": opsets(model), "quantization": self.quantization,
            "registered_model": self.name, "version": self.version, "family": self.family,
            "input": model.graph.input[0].name, "output": output,
        }


def opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {op.domain or "ai.onnx": int(op.version) for op in model.opset_import}


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_entry(export_report: dict[str, Any] | None, name: str, version: int) -> dict[str, Any] | None:
    for entry in (export_report or {}).get("versions", []):
        if entry.get("name") == name and int(entry.get("version", -1)) == version:
            return dict(entry)
    return None


_QUANTIZATION = {"static": "int8-qdq", "weights": "int8-weights", "dynamic": "int8-dynamic"}


def _quantization(entry: dict[str, Any] | None, onnx_path: Path) -> str:
    """How the shipped file is quantized: the export report's recipe, else read from the file name."""
    if ".int8." not in onnx_path.name:
        return "none"
    method = ((entry or {}).get("details") or {}).get("quantization", {}).get("method")
    return _QUANTIZATION.get(str(method), "int8-qdq")


def _deployed_files(export_dir: Path, entry: dict[str, Any] | None, name: str, version: int) -> tuple[Path, Path]:
    """The deployed ONNX and its ORT form: from the export report's roles, else by file name."""
    folder = export_dir / name / f"v{version}"
    if entry is not None and "deploy_onnx" in entry.get("files", {}) and "ort" in entry["files"]:
        return export_dir / entry["files"]["deploy_onnx"], export_dir / entry["files"]["ort"]
    for stem in ("model.int8", "model"):
        if (folder / f"{stem}.onnx").is_file():
            return folder / f"{stem}.onnx", folder / f"{stem}.ort"
    raise BundleBuildError(
        f"{name} version {version}: no exported model in {name}/v{version}/ of the export directory; "
        "run `carryon export` (or `dvc repro export`) for it"
    )


def _benchmarks(tags: dict[str, str], metrics: dict[str, float]) -> dict[str, Any]:
    """Benchmark figures recorded for the version: tags/metrics ``carryon.bench.<device>[.<figure>]``."""
    out: dict[str, Any] = {}
    recorded: dict[str, Any] = {k: v for k, v in metrics.items() if k.startswith(BENCH_PREFIX)}
    recorded.update({k: v for k, v in tags.items() if k.startswith(BENCH_PREFIX)})
    for key, value in sorted(recorded.items()):
        device, _, figure = key[len(BENCH_PREFIX):].partition(".")
        if not device:
            continue
        parsed: Any = value
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
        if figure:
            slot = out.setdefault(device, {})
            if isinstance(slot, dict):
                slot[figure] = parsed
        else:
            out[device] = parsed if isinstance(parsed, dict) else {"summary": parsed}
    return out


def shipped_model(client: MlflowClient, kind: str, alias: str, export_dir: Path,
                  export_report: dict[str, Any] | None) -> ShippedModel:
    """The version of ``kind``'s registered model carrying ``alias``, refused unless it is fit to ship."""
    from mlflow.exceptions import MlflowException

    name = REGISTERED[kind]
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        raise BundleBuildError(
            f"registered model {name!r} has no version with alias {alias!r} ({e.message.splitlines()[0]}); "
            + ("run `carryon select` (or `dvc repro`)" if alias == "candidate"
               else f"promote one with `carryon models promote {name} VERSION`")
        ) from None
    version = int(mv.version)
    run = client.get_run(mv.run_id) if mv.run_id else None
    run_tags = dict(run.data.tags) if run else {}
    version_tags = dict(mv.tags or {})
    gates = [t.get(TAG_GATES) for t in (version_tags, run_tags) if t.get(TAG_GATES)]
    if "failed" in gates or not gates:
        state = "failed" if "failed" in gates else "not set"
        raise BundleBuildError(
            f"{name} version {version} (alias {alias!r}): export gates {state} (tag {TAG_GATES}); only a version "
            "whose export passed its gates can ship: export it with `carryon export` or move the alias"
        )
    entry = _export_entry(export_report, name, version)
    onnx_path, ort_path = _deployed_files(export_dir, entry, name, version)
    expected = version_tags.get(TAG_DEPLOY_SHA) or run_tags.get(TAG_DEPLOY_SHA)
    for path in (onnx_path, ort_path):
        if not path.is_file():
            raise BundleBuildError(
                f"{name} version {version}: deployed file {path.relative_to(export_dir).as_posix()} is missing "
                "from the export directory; re-run `carryon export` for it"
            )
    actual = _file_sha256(onnx_path)
    if expected is None or actual != expected:
        raise BundleBuildError(
            f"{name} version {version}: deployed file {onnx_path.relative_to(export_dir).as_posix()} has sha256 "
            f"{actual[:12]}…, the registry's tag {TAG_DEPLOY_SHA} says {(expected or 'nothing')[:12]}…; the export "
            "directory holds another export of this version: re-run `carryon export`"
        )
    metrics = dict(run.data.metrics) if run else {}
    quality = {k: float(v) for k, v in sorted(metrics.items())
               if not k.startswith(_NOT_METRICS) and not k.startswith(BENCH_PREFIX) and math.isfinite(v)}
    family = version_tags.get("carryon.family") or run_tags.get("carryon.family") or "unknown"
    lineage = {k: run_tags.get(f"carryon.{k}") or version_tags.get(f"carryon.{k}") or "unknown"
               for k in _LINEAGE_KEYS}
    lineage["run_id"] = mv.run_id or "unknown"
    quantization = _quantization(entry, onnx_path)
    return ShippedModel(kind, name, version, family, onnx_path, ort_path, quantization, quality,
                        _benchmarks({**run_tags, **version_tags}, metrics), lineage)
