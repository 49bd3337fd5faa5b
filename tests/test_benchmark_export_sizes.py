"""The export-sizes benchmark on a real tiny export: every figure present, agreeing with the export report.

No assertion on speed: this checks the command, its JSON, the baseline loaded from MLflow,
and that a missing report or file ends in a message naming it rather than a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "export_sizes.py"

sys.path.insert(0, str(ROOT / "benchmarks"))
import export_sizes  # noqa: E402


def _bench(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--repeats", "2", "--warmup", "0", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict[str, Any]]:
    """A project dir with metrics/export.json, data/export and an MLflow SQLite store, like `carryon export`."""
    from export.stage import export_versions
    from models import _plots
    from models.cta import train_cta
    from pipeline.record import record_candidates
    from pipeline.tracking import open_tracking
    from tests.world import run_data_stages, small_params

    root = tmp_path_factory.mktemp("project")
    params = small_params(creators=2, drops=4, viewers=120)
    params = replace(params, train=replace(params.train, cta_families=("logreg", "lightgbm", "mlp"),
                                           lightgbm=replace(params.train.lightgbm, n_estimators=30)),
                     evaluation=replace(params.evaluation, n_bootstrap=30))
    world = run_data_stages(root / "world", params)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        client = open_tracking(root, os.environ)
        candidates = train_cta(world.features, params.train, params.evaluation, params.policy.exploration)
        recorded = record_candidates(client, candidates, {"git_commit": "test"})
        for c in candidates:
            _plots.close(c.figures)
        results = export_versions(client, [(r.name, r.version) for r in recorded], world.features,
                                  root / "data" / "export", params.train.test_fraction)
    report = {"versions": [r.to_dict() for r in results]}
    (root / "metrics").mkdir()
    (root / "metrics" / "export.json").write_text(json.dumps(report), encoding="utf-8")
    return root, env, report


@pytest.mark.slow
def test_reports_every_figure_for_every_candidate(project: tuple[Path, dict[str, str], dict[str, Any]]) -> None:
    root, env, report = project
    result = _bench(root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.lstrip().startswith("{"), "progress must go to stderr, only JSON on stdout"
    data = json.loads(result.stdout)
    assert data["benchmark"] == "export_sizes"
    assert data["repeats"] == 2
    by_family = {c["family"]: c for c in data["candidates"]}
    assert set(by_family) == {"logreg", "lightgbm", "mlp"}
    exported = {v["family"]: v for v in report["versions"]}
    for family, cand in by_family.items():
        sizes = exported[family]["sizes"]
        assert cand["files"]["onnx"]["bytes"] == sizes["onnx_bytes"]
        assert cand["files"]["ort"]["bytes"] == sizes["ort_bytes"]
        for role, form in cand["files"].items():
            assert form["session_create_ms_median"] > 0, (family, role)
            assert form["session_create_ms_min"] <= form["session_create_ms_median"]
            if role != "ort":
                assert form["weight_bytes"] == form["initializer_bytes"] + form["tree_tensor_bytes"] > 0
        assert cand["ratios"]["onnx_over_ort_session_time"] > 0

    tree = by_family["lightgbm"]
    assert tree["kind"] == "tree"
    assert tree["files"]["onnx"]["tree_tensor_bytes"] > tree["files"]["onnx"]["initializer_bytes"]
    base = tree["baseline"]
    assert base["bytes"] > 0 and base["weight_bytes"] > 0 and base["session_create_ms_median"] > 0
    assert base["opsets"]["ai.onnx.ml"] < 5
    for key in ("size_ratio_legacy_over_opset5", "weight_ratio_legacy_over_opset5",
                "session_time_ratio_legacy_over_opset5", "session_time_ratio_legacy_over_ort"):
        assert base[key] > 0, key
    bounds = base["bounds"]
    # the bare operator is the model without its preprocessing and reshape nodes: fewer bytes, more than metadata
    assert bounds["empty"]["bytes"] < bounds["bare"]["bytes"] < tree["files"]["onnx"]["bytes"]
    assert bounds["size_ratio_legacy_over_bare"] == base["bytes"] / bounds["bare"]["bytes"]
    assert bounds["size_ratio_legacy_over_bare"] > base["size_ratio_legacy_over_opset5"]
    assert bounds["session_time_ratio_legacy_over_bare"] == pytest.approx(
        base["session_create_ms_median"] / bounds["bare"]["session_create_ms_median"])
    assert bounds["session_time_ratio_legacy_over_empty"] > 0

    net = by_family["mlp"]
    assert net["kind"] == "network"
    # the export kept the first quantization recipe whose model passed the gates, and gated on its figures
    quantized = exported["mlp"]["details"]["quantization"]
    attempts = quantized["attempts"]
    assert [a["method"] for a in attempts] in (["static"], ["static", "weights"])
    assert all(not a["passed"] for a in attempts[:-1])
    assert quantized["method"] == attempts[-1]["method"]
    gates = exported["mlp"]["gates"]
    assert gates["quantized_auc_drop"]["value"] == attempts[-1]["auc_drop"]
    assert gates["quantized_top1_agreement"]["value"] == attempts[-1]["top1_agreement"]
    assert exported["mlp"]["passed"] == all(g["passed"] for g in gates.values())
    for attempt in attempts:  # each recipe was judged by exactly the gates' limits
        assert attempt["passed"] == (attempt["auc_drop"] <= gates["quantized_auc_drop"]["limit"]
                                     and attempt["top1_agreement"] >= gates["quantized_top1_agreement"]["limit"])
    assert attempts[-1]["passed"] == (gates["quantized_auc_drop"]["passed"]
                                      and gates["quantized_top1_agreement"]["passed"])
    assert net["files"]["int8_onnx"]["bytes"] == exported["mlp"]["sizes"]["int8_onnx_bytes"]
    assert net["ratios"]["ort_source"] == "int8_onnx"
    assert net["ratios"]["float_over_int8_layer_bytes"] > 1  # int8 layers are smaller whatever the target says
    for key in ("float_over_int8_bytes", "float_over_int8_weight_bytes", "float_over_int8_session_time"):
        assert net["ratios"][key] > 0, key
    assert "baseline" not in by_family["logreg"] and "int8_onnx" not in by_family["logreg"]["files"]

    targets = data["targets"]
    assert set(targets["tree_size_vs_legacy"]["measured"]) == {f"cta v{tree['version']}"}
    assert set(targets["int8_layer_weights_vs_float"]["measured"]) == {f"cta v{net['version']}"}
    for judged in targets.values():
        assert isinstance(judged["pass"], bool)
    for which, ratio in (("tree_size_vs_legacy", "size_ratio_legacy_over_bare"),
                         ("tree_session_time_vs_legacy", "session_time_ratio_legacy_over_bare")):
        key = f"cta v{tree['version']}"
        assert targets[which]["bound"] == {key: bounds[ratio]}
        assert targets[which]["reachable"] == {key: bounds[ratio] >= float(targets[which]["target"][3:-1])}
    assert str(root) not in result.stdout and "/tmp/" not in result.stdout


@pytest.mark.slow
def test_without_baseline_no_mlflow_is_needed(project: tuple[Path, dict[str, str], dict[str, Any]]) -> None:
    root, env, _ = project
    env = {**env, "MLFLOW_TRACKING_URI": "sqlite:////nonexistent-dir/never.db"}
    result = _bench(root, "--no-baseline", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert all("baseline" not in c for c in data["candidates"])
    assert data["targets"]["tree_size_vs_legacy"]["pass"] is None


@pytest.mark.slow
def test_without_onnxmltools_the_baseline_asks_for_the_bench_extra(
        project: tuple[Path, dict[str, str], dict[str, Any]]) -> None:
    root, env, _ = project
    hide = ("import runpy, sys; sys.modules['onnxmltools'] = None; "  # as in a venv with only the train extra
            f"sys.argv = [{str(SCRIPT)!r}, '--repeats', '1', '--warmup', '0']; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", hide], cwd=root, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert "needs onnxmltools" in result.stderr and "'.[bench]'" in result.stderr and "--no-baseline" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_report_is_named_with_the_fix(tmp_path: Path) -> None:
    result = _bench(tmp_path)
    assert result.returncode == 2
    assert "export.json" in result.stderr and "carryon export" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_file_missing_from_the_export_dir_is_named(tmp_path: Path) -> None:
    entry = {"name": "cta", "version": 3, "family": "logreg", "passed": True,
             "files": {"onnx": "cta/v3/model.onnx", "ort": "cta/v3/model.ort"}}
    (tmp_path / "report.json").write_text(json.dumps({"versions": [entry]}), encoding="utf-8")
    result = _bench(tmp_path, "--report", "report.json", "--export-dir", "exported")
    assert result.returncode == 2
    assert "cta/v3/model.onnx" in result.stderr and "--export-dir" in result.stderr
    assert str(tmp_path) not in result.stderr


def test_weight_bytes_count_tree_tensors_and_initializers() -> None:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    splits = numpy_helper.from_array(np.zeros(3, dtype=np.float32))
    leaves = numpy_helper.from_array(np.zeros(4, dtype=np.float32))
    members = numpy_helper.from_array(np.zeros(5, dtype=np.float32))
    node = helper.make_node("TreeEnsemble", ["x"], ["y"], domain="ai.onnx.ml", nodes_splits=splits,
                            leaf_weights=leaves, membership_values=members, nodes_featureids=[0, 0, 0])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
                              initializer=[numpy_helper.from_array(np.zeros(2, dtype=np.float64), "c")])
    counted = export_sizes.weight_bytes(helper.make_model(graph))
    assert counted == {"initializer_bytes": 16, "tree_tensor_bytes": 48, "weight_bytes": 64}


def test_a_target_is_unjudged_without_candidates_and_fails_on_any_miss() -> None:
    assert export_sizes.targets([])["tree_size_vs_legacy"]["pass"] is None
    cands = [{"name": "cta", "version": v, "ratios": {"float_over_int8_layer_bytes": r}}
             for v, r in ((1, 4.0), (2, 3.0))]
    judged = export_sizes.targets(cands)["int8_layer_weights_vs_float"]
    assert judged["measured"] == {"cta v1": 4.0, "cta v2": 3.0}
    assert judged["pass"] is False


def test_bare_tree_op_is_the_models_own_tree_node_with_its_metadata() -> None:
    """The bound's model: exactly the exported TreeEnsemble node, fed what it reads, loadable, same metadata."""
    import lightgbm as lgb
    import numpy as np
    import onnxruntime as ort

    from export.trees import lightgbm_to_onnx

    rng = np.random.default_rng(7)
    x = np.column_stack([rng.normal(size=400), rng.integers(0, 6, size=400)]).astype(np.float32)
    y = (x[:, 0] + (x[:, 1] % 2) > 0.5).astype(int)
    native = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, min_child_samples=5, verbose=-1)
    native.fit(x, y, categorical_feature=[1])
    model = lightgbm_to_onnx(native, ["a", "b"], kind="classifier", metadata={"carryon.spec_hash": "h"})
    assert len(model.graph.node) > 1  # indicator nodes before the trees, Reshape and Sigmoid after

    bare = export_sizes.bare_tree_op(model)
    (node,) = bare.graph.node
    assert node == next(n for n in model.graph.node if n.op_type == "TreeEnsemble")
    assert node.input[0] != "features"  # it reads the features with the set indicators appended
    width = bare.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    assert width > 2
    assert {p.key: p.value for p in bare.metadata_props} == {p.key: p.value for p in model.metadata_props}
    session = ort.InferenceSession(bare.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {node.input[0]: np.zeros((3, width), dtype=np.float32)})
    assert out.shape == (3, 1)

    empty = export_sizes.empty_model(model)
    session = ort.InferenceSession(empty.SerializeToString(), providers=["CPUExecutionProvider"])
    (same,) = session.run(None, {"features": x[:3]})
    np.testing.assert_array_equal(same, x[:3])
