"""``carryon export``: every freshly trained candidate to the files devices run, with parity gates.

For each registered version named in the training reports: the ONNX model (preprocessing
inside the graph), its int8 form where it is a network, the ORT-format model with its
required-operators list, the mobile usability findings, and a parity report. The gates
(float ONNX vs native; quantized vs float; zero tree routing flips; the model checks and
the operator allowlist) end as the tag ``carryon.gates`` = passed | failed on the run and
the version, which ``select`` and bundles respect.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from export._graph import initializer_bytes, run, tree_tensor_bytes
from export.allowlist import check_operators, load_allowlist
from export.checks import check_model, strip_paths
from export.mobile import mobile_usability, to_ort
from features._fsutil import atomic_dir, atomic_write_text
from features.config import ProgressFn, no_progress
from features.errors import CarryonError
from models._tables import BonusTable, CtaTable, load_bonus, load_catalog, load_cta, time_split
from models.cta import variant_inputs

if TYPE_CHECKING:
    from mlflow import MlflowClient

FLOAT_TOLERANCE = 1e-5  # max abs difference, float ONNX vs the native model
_CALIBRATION_ROWS = 2000


class ExportError(CarryonError):
    """A candidate cannot be exported (not a failed gate: the export itself broke)."""


@dataclass
class ExportedVersion:
    name: str
    version: int
    family: str
    files: dict[str, str] = field(default_factory=dict)  # role -> path relative to the export dir
    gates: dict[str, Any] = field(default_factory=dict)  # gate -> {"value", "limit", "passed"}
    sizes: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.gates.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "family": self.family, "passed": self.passed,
                "files": self.files, "gates": self.gates, "sizes": self.sizes, "details": self.details}


def _gate(value: float, limit: float, ok: bool) -> dict[str, Any]:
    return {"value": value, "limit": limit, "passed": bool(ok)}


def _native_scores(model: Any, x: np.ndarray) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
    return np.asarray(model.predict(x), dtype=np.float64)  # a LightGBM Booster: probability or score


def _load(client: MlflowClient, name: str, version: int) -> tuple[Any, str, str]:
    import mlflow

    mv = client.get_model_version(name, str(version))
    if mv.run_id is None:
        raise ExportError(f"{name} version {version} has no training run; register candidates with `carryon train`")
    run = client.get_run(mv.run_id)
    family = run.data.tags.get("carryon.family", "")
    uri = f"models:/{name}/{version}"
    if family in ("lightgbm", "lambdarank"):
        return mlflow.lightgbm.load_model(uri), family, mv.run_id
    return mlflow.sklearn.load_model(uri), family, mv.run_id


def _convert(model: Any, family: str, names: Sequence[str], kind: str, metadata: dict[str, str]) -> onnx.ModelProto:
    if family in ("lightgbm", "lambdarank"):
        from export.trees import lightgbm_to_onnx

        return lightgbm_to_onnx(model, list(names), kind="classifier" if kind == "cta" else "ranker",
                                metadata=metadata)
    from export.networks import sklearn_to_onnx

    return sklearn_to_onnx(model, list(names), metadata=metadata)


def _write_model(model: onnx.ModelProto, path: Path) -> int:
    data = model.SerializeToString()
    path.write_bytes(data)
    return len(data)


def _export_one(client: MlflowClient, name: str, version: int, tables: dict[str, Any], work: Path,
                spec_hash: str) -> ExportedVersion:
    from export.quantize import calibration_sample, quantize_gated, should_quantize

    native, family, run_id = _load(client, name, version)
    kind = "cta" if name == "cta" else "bonus-ranker"
    table = tables[kind]
    names = table["names"]
    metadata = {"carryon.spec_hash": spec_hash, "carryon.kind": kind, "carryon.family": family,
                "carryon.registered_model": name, "carryon.version": str(version)}
    result = ExportedVersion(name, version, family)
    folder = work / name / f"v{version}"
    folder.mkdir(parents=True)
    model = _convert(native, family, names, kind, metadata)
    strip_paths(model)
    check_model(model, f"{name} v{version}")
    check_operators(model, load_allowlist(), f"{name} v{version}")
    result.sizes["onnx_bytes"] = _write_model(model, folder / "model.onnx")
    result.files["onnx"] = f"{name}/v{version}/model.onnx"

    x_test = table["x_test"]
    diff = float(np.max(np.abs(run(model, x_test).astype(np.float64).reshape(-1) - _native_scores(native, x_test))))
    result.gates["float_vs_native_max_abs_diff"] = _gate(diff, FLOAT_TOLERANCE, diff <= FLOAT_TOLERANCE)
    if family in ("lightgbm", "lambdarank"):
        from export.trees import precision_report, threshold_report

        flips = threshold_report(native, x_test)
        # What precision below float32 the trees could take without changing a decision (issue 4).
        result.details["precision_report"] = precision_report(native, x_test[:_CALIBRATION_ROWS])
        routing = int(flips["data"]["leaf_flips_nudged"] + flips["boundary"]["leaf_flips_nudged"])
        result.gates["routing_flips"] = _gate(routing, 0, routing == 0)
        result.details["threshold_report"] = flips

    deployable = model
    if should_quantize(model):
        quant, parity, attempts = quantize_gated(
            model, calibration_sample(table["x_train"], _CALIBRATION_ROWS),
            lambda candidate: _quantized_parity(model, candidate, table))
        result.gates.update(_quantized_gates(parity))
        strip_paths(quant.model)
        check_model(quant.model, f"{name} v{version} (int8)")
        check_operators(quant.model, load_allowlist(), f"{name} v{version} (int8)")
        result.sizes.update({k: v for k, v in quant.sizes().items() if isinstance(v, int)})
        result.sizes["int8_onnx_bytes"] = _write_model(quant.model, folder / "model.int8.onnx")
        result.files["int8_onnx"] = f"{name}/v{version}/model.int8.onnx"
        result.details["quantization"] = {"method": quant.method, **{k: v for k, v in parity.items()
                                                                      if k != "passed"},
                                          "attempts": attempts}
        deployable = quant.model
    result.sizes["weight_bytes"] = initializer_bytes(deployable) + tree_tensor_bytes(deployable)
    deployable_path = folder / ("model.int8.onnx" if deployable is not model else "model.onnx")
    # The file a device runs (int8 where quantized): bench reports and bundles find the version by its hash.
    result.files["deploy_onnx"] = f"{name}/v{version}/{deployable_path.name}"
    result.details["deploy_sha256"] = hashlib.sha256(deployable_path.read_bytes()).hexdigest()
    ort_files = to_ort(deployable_path, folder)
    result.files["ort"] = f"{name}/v{version}/{ort_files.ort_model}"
    result.files["required_operators"] = f"{name}/v{version}/{ort_files.required_operators}"
    result.sizes["ort_bytes"] = ort_files.ort_bytes
    usability = mobile_usability(deployable_path)
    atomic_write_text(folder / "mobile_usability.json", json.dumps(usability, indent=2, sort_keys=True) + "\n")
    result.files["mobile_usability"] = f"{name}/v{version}/mobile_usability.json"
    result.details["run_id"] = run_id
    return result


def _quantized_parity(model: onnx.ModelProto, quant: onnx.ModelProto, table: dict[str, Any]) -> dict[str, Any]:
    """The quantized gates' figures: AUC drop on the test rows; for CTA models also the top-1 agreement
    over every variant of each test impression (the decision a device makes). ``passed`` is exactly
    the verdict of ``_quantized_gates``, so the recipe kept is one the gates accept."""
    from export.quantize import quantization_parity

    out = quantization_parity(model, quant, table["x_test"], table["y_test"])
    if table["k"] is not None:
        top1 = quantization_parity(model, quant, table["x_all_variants"], table["y_all_variants"],
                                   group_size=table["k"])
        out["top1_agreement"] = top1["top1_agreement"]
    out["passed"] = all(g["passed"] for g in _quantized_gates(out).values())
    return out


def _quantized_gates(figures: dict[str, Any]) -> dict[str, Any]:
    """The quantized-vs-float gates of one quantized model's figures (top-1 only where it was measured)."""
    from export.quantize import AUC_DROP_GATE, TOP1_GATE

    gates = {"quantized_auc_drop": _gate(figures["auc_drop"], AUC_DROP_GATE, figures["auc_drop"] <= AUC_DROP_GATE)}
    if "top1_agreement" in figures:
        top1 = figures["top1_agreement"]
        gates["quantized_top1_agreement"] = _gate(top1, TOP1_GATE, top1 >= TOP1_GATE)
    return gates


def _tables(features_dir: Path, test_fraction: float) -> tuple[dict[str, Any], str]:
    catalog = load_catalog(features_dir)
    cta: CtaTable = load_cta(features_dir, catalog)
    test = time_split(cta.creator, cta.drop, cta.ts, test_fraction)
    cta_test = cta.subset(test)
    inputs, _ = variant_inputs(cta_test, catalog)
    k = inputs.shape[1]
    # Labels for the all-variants matrix only feed the AUC of quantization_parity's top-1 call;
    # the shown variant's label stands in for its row, the others are 0.
    y_all = np.zeros(inputs.shape[:2], dtype=np.int8)
    y_all[np.arange(len(cta_test.y)), cta_test.action] = cta_test.y
    bonus: BonusTable = load_bonus(features_dir)
    bonus_test = time_split(bonus.creator, bonus.drop, bonus.ts, test_fraction)
    return {
        "cta": {"names": cta.spec.cta_names, "x_test": cta_test.x, "y_test": cta_test.y,
                "x_train": cta.x[~test], "k": k, "x_all_variants": inputs.reshape(-1, inputs.shape[2]),
                "y_all_variants": y_all.reshape(-1)},
        "bonus-ranker": {"names": bonus.spec.bonus_names, "x_test": bonus.x[bonus_test],
                         "y_test": (bonus.relevance[bonus_test] > 0).astype(np.int8),
                         "x_train": bonus.x[~bonus_test], "k": None},
    }, cta.spec.hash


def export_versions(client: MlflowClient, versions: Sequence[tuple[str, int]], features_dir: Path, out_dir: Path,
                    test_fraction: float, *, progress: ProgressFn = no_progress) -> list[ExportedVersion]:
    """Export each (registered model, version), gate it, tag it; write ``out_dir`` whole."""
    tables, spec_hash = _tables(features_dir, test_fraction)
    results = []
    with atomic_dir(out_dir) as work:
        for step, (name, version) in enumerate(versions):
            progress("export", step, len(versions))
            try:
                results.append(_export_one(client, name, version, tables, work, spec_hash))
            except ValueError as e:  # the converters' and checks' refusals name the model and the fix
                raise ExportError(f"exporting {name} version {version} failed: {e}") from e
        progress("export", len(versions), len(versions))
        atomic_write_text(work / "allowlist.json", json.dumps(load_allowlist().to_dict(), indent=2) + "\n")
    for result in results:
        _record(client, result)
    return results


def _record(client: MlflowClient, result: ExportedVersion) -> None:
    """Mark the run and the version passed/failed and attach the gate figures to the run."""
    status = "passed" if result.passed else "failed"
    run_id = result.details["run_id"]
    client.set_tag(run_id, "carryon.gates", status)
    client.set_model_version_tag(result.name, str(result.version), "carryon.gates", status)
    client.set_model_version_tag(result.name, str(result.version), "carryon.deploy_sha256",
                                 result.details["deploy_sha256"])
    for gate, figures in result.gates.items():
        value = float(figures["value"])
        if math.isfinite(value):
            client.log_metric(run_id, f"gate_{gate}", value)
    for size, value in result.sizes.items():
        client.log_metric(run_id, f"size_{size}", float(value))
    client.log_dict(run_id, result.to_dict(), "export/parity.json")
