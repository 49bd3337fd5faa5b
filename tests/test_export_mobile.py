"""Mobile packaging: ORT-format conversion (Fixed optimizations), the reduced-build operator list, and
onnxruntime's NNAPI / CoreML usability findings, on a tiny network and a tiny opset-5 tree model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.checks import absolute_paths_in
from export.mobile import MobilePackagingError, mobile_usability, to_ort
from tests.test_export_checks import mlp_model, tree_model

BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {"mlp": mlp_model, "tree": tree_model}


def _save(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "src" / f"cta_{kind}.onnx"
    path.parent.mkdir(exist_ok=True)
    onnx.save(BUILDERS[kind](), path)
    return path


def _rows(n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    x[:, 2] = rng.integers(0, 4, size=n)
    x[::9, 0] = 0.5  # exactly at the tree's threshold
    return x


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_to_ort_writes_a_loadable_model_with_the_same_outputs(tmp_path: Path, kind: str) -> None:
    src = _save(tmp_path, kind)
    out = tmp_path / "mobile"
    art = to_ort(src, out)
    assert art.ort_model == f"cta_{kind}.ort"
    assert art.required_operators == f"cta_{kind}.required_operators.config"
    assert sorted(p.name for p in out.iterdir()) == sorted([art.ort_model, art.required_operators])
    assert art.ort_bytes == (out / art.ort_model).stat().st_size > 0
    assert art.optimization == "fixed/basic"
    assert art.ort_format_version.isdigit() and int(art.ort_format_version) >= 5
    x = _rows()
    onnx_sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    ort_sess = ort.InferenceSession(str(out / art.ort_model), providers=["CPUExecutionProvider"])
    assert [o.name for o in ort_sess.get_outputs()] == [o.name for o in onnx_sess.get_outputs()]
    (want,) = onnx_sess.run(None, {"features": x})
    (got,) = ort_sess.run(None, {"features": x})
    assert got.shape == (len(x),)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_required_operators_config_keeps_op_lines_and_no_absolute_path(tmp_path: Path) -> None:
    src = _save(tmp_path, "tree")
    art = to_ort(src, tmp_path / "mobile")
    text = (tmp_path / "mobile" / art.required_operators).read_text()
    assert absolute_paths_in(text) == []
    assert str(tmp_path) not in text
    op_lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert op_lines == list(art.operators)
    assert any(line.startswith("ai.onnx.ml;5;") and "TreeEnsemble" in line for line in op_lines)
    assert any(line.startswith("ai.onnx;") and "Reshape" in line for line in op_lines)
    assert "# - cta_tree.ort" in text.splitlines()
    assert absolute_paths_in(json.dumps(art.to_dict())) == []
    assert str(tmp_path).encode() not in (tmp_path / "mobile" / art.ort_model).read_bytes()


def test_fixed_basic_uses_only_standard_operators_and_all_fuses_contrib_ones(tmp_path: Path) -> None:
    src = _save(tmp_path, "mlp")
    basic = to_ort(src, tmp_path / "basic")
    assert all(line.startswith("ai.onnx;") for line in basic.operators)
    fused = to_ort(src, tmp_path / "all", level="all")
    assert fused.optimization == "fixed/all"
    assert any(line.startswith("com.microsoft;") for line in fused.operators)


def test_to_ort_replaces_previous_outputs_and_leaves_no_temp_files(tmp_path: Path) -> None:
    src = _save(tmp_path, "mlp")
    out = tmp_path / "mobile"
    out.mkdir()
    (out / "cta_mlp.ort").write_bytes(b"stale")
    art = to_ort(src, out)
    assert (out / "cta_mlp.ort").read_bytes() != b"stale"
    assert sorted(p.name for p in out.iterdir()) == sorted([art.ort_model, art.required_operators])


def test_to_ort_reports_a_model_onnxruntime_cannot_load(tmp_path: Path) -> None:
    model = mlp_model()
    model.graph.node[0].input[1] = "no_such_weight"
    src = tmp_path / "broken.onnx"
    onnx.save(model, src)
    with pytest.raises(MobilePackagingError) as info:
        to_ort(src, tmp_path / "mobile")
    assert "broken.onnx" in str(info.value)
    assert absolute_paths_in(str(info.value)) == []
    assert not (tmp_path / "mobile").exists() or list((tmp_path / "mobile").iterdir()) == []


EPS = ("nnapi", "coreml_neuralnetwork", "coreml_mlprogram")


def test_mobile_usability_of_the_network(tmp_path: Path) -> None:
    report = mobile_usability(_save(tmp_path, "mlp"))
    assert report["model"] == "cta_mlp.onnx"
    assert report["dynamic_inputs"] == ["features"]
    assert set(report["execution_providers"]) == set(EPS)
    for ep in EPS:
        entry = report["execution_providers"][ep]
        assert entry["as_is"]["nodes"] >= 3
        # the dynamic batch dimension keeps the nodes off the NPU as-is; fixing it lets every op through
        assert entry["as_is"]["nodes_unsupported_due_to_dynamic_input"] > 0
        assert entry["if_shapes_fixed"]["unsupported_ops"] == []
        assert entry["if_shapes_fixed"]["supported_nodes"] == entry["if_shapes_fixed"]["nodes"]
        assert entry["suitability"] == "YES"
    assert report["recommended"] is True
    assert absolute_paths_in(json.dumps(report)) == []


def test_mobile_usability_of_the_tree_model(tmp_path: Path) -> None:
    report = mobile_usability(_save(tmp_path, "tree"))
    assert set(report["execution_providers"]) == set(EPS)
    for ep in EPS:
        entry = report["execution_providers"][ep]
        assert "ai.onnx.ml:TreeEnsemble" in entry["if_shapes_fixed"]["unsupported_ops"]
        assert entry["if_shapes_fixed"]["nodes_unsupported_due_to_op"] >= 1
        assert entry["suitability"] in ("NO", "MAYBE")
    assert report["recommended"] is False
    assert json.loads(json.dumps(report)) == report
    assert absolute_paths_in(json.dumps(report)) == []


def test_mobile_usability_reports_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(MobilePackagingError, match=r"absent\.onnx"):
        mobile_usability(tmp_path / "absent.onnx")


def test_to_ort_refuses_to_write_a_build_machine_path(tmp_path: Path) -> None:
    model = mlp_model()
    model.graph.node[6].name = f"{tmp_path}/to_1d"  # node names travel into the .ort
    src = tmp_path / "leaky.onnx"
    onnx.save(model, src)
    with pytest.raises(MobilePackagingError, match=r"leaky\.ort would contain absolute path"):
        to_ort(src, tmp_path / "mobile")
    assert not (tmp_path / "mobile" / "leaky.ort").exists()


def test_to_ort_reports_a_missing_model_without_its_path(tmp_path: Path) -> None:
    with pytest.raises(MobilePackagingError) as info:
        to_ort(tmp_path / "absent.onnx", tmp_path / "mobile")
    assert "absent.onnx" in str(info.value)
    assert str(tmp_path) not in str(info.value)
