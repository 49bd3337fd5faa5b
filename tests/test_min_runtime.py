"""The minimum onnxruntime each exported model records is the real one, checked against released wheels.

Exports every kind of model `carryon export` writes (opset-5 trees in both categorical forms, a
ranker, the MLP in float, static-QDQ int8 and int8-weights form, a linear model; ONNX and ORT
format) in this venv, then runs them in fresh venvs holding only an older onnxruntime from the
package registry: at the version the models declare they must load and give this runtime's
outputs; one release earlier, trees must be refused (which is why they declare it) while
standard-operator models still run (which is why they declare less).
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.checks import MIN_ONNXRUNTIME, TREE_ENSEMBLE_ONNXRUNTIME
from export.mobile import to_ort
from export.networks import sklearn_to_onnx
from export.quantize import quantize_mlp, quantize_weights
from export.trees import lightgbm_to_onnx
from features.spec import CTA_STYLES, FeatureSpec
from models.candidates import make_classifier
from models.config import TrainConfig
from models.synthetic import synthetic_rows

pytestmark = pytest.mark.slow

SPEC = FeatureSpec.build(["cooking", "fitness", "music"], CTA_STYLES, ["workbook"], 60.0)
NAMES = SPEC.cta_names
META = {"carryon.spec_hash": "abc123", "carryon.kind": "cta"}

RUNNER = """
import json, sys
import numpy as np
import onnxruntime as ort
inputs = np.load(sys.argv[1])
report = {"version": ort.__version__, "errors": {}}
outputs = {}
for name in json.loads(sys.argv[2]):
    options = ort.SessionOptions()
    if name.endswith(".ort"):
        options.add_session_config_entry("session.load_model_format", "ORT")
    try:
        session = ort.InferenceSession(sys.argv[3] + "/" + name, options, providers=["CPUExecutionProvider"])
        outputs[name] = session.run(None, {"features": inputs[name.split(".")[0]]})[0]
    except Exception as e:
        report["errors"][name] = str(e).splitlines()[0]
np.savez(sys.argv[4], **outputs)
print(json.dumps(report))
"""


def _labels(x: np.ndarray) -> np.ndarray:
    logit = (x[:, 0] - 30) / 10 + 1.5 * (x[:, NAMES.index("variant_style")] % 3 == 1)
    return (np.random.default_rng(3).random(len(x)) < 1 / (1 + np.exp(-logit))).astype(int)


def _trees(kind: str) -> Any:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    x[:, 4] = rng.integers(0, 9, size=600)
    x[rng.random(600) < 0.1, 1] = np.nan
    score = x[:, 0] + np.isin(x[:, 4], [1, 4, 6]) - 0.5 * np.nan_to_num(x[:, 1])
    params = {"n_estimators": 12, "num_leaves": 7, "min_child_samples": 5, "min_data_per_group": 5,
              "cat_smooth": 1.0, "verbose": -1}
    if kind == "classifier":
        return lgb.LGBMClassifier(**params).fit(x, (score > 0.3).astype(int), categorical_feature=[4])
    relevance = np.digitize(score, [0.0, 1.0]).astype(int)
    return lgb.LGBMRanker(objective="lambdarank", **params).fit(x, relevance, group=[20] * 30,
                                                                categorical_feature=[4])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """Model files (name -> declared minimum runtime) and their inputs, stem -> float32 rows."""
    out = tmp_path_factory.mktemp("models")
    tree_names = [f"f{i}" for i in range(5)]
    x_train = synthetic_rows(SPEC, NAMES, 1500, seed=0)
    mlp = sklearn_to_onnx(make_classifier("mlp", SPEC, NAMES, TrainConfig()).fit(x_train, _labels(x_train)),
                          NAMES, metadata={**META, "carryon.family": "mlp"})
    logreg = sklearn_to_onnx(make_classifier("logreg", SPEC, NAMES, TrainConfig()).fit(x_train, _labels(x_train)),
                             NAMES, metadata={**META, "carryon.family": "logreg"})
    classifier, ranker = _trees("classifier"), _trees("ranker")
    models = {
        "trees_indicator": lightgbm_to_onnx(classifier, tree_names, kind="classifier", metadata=META),
        "trees_member": lightgbm_to_onnx(classifier, tree_names, kind="classifier", metadata=META,
                                         categorical="member"),
        "ranker": lightgbm_to_onnx(ranker, tree_names, kind="ranker", metadata=META),
        "mlp": mlp,
        "mlp_static": quantize_mlp(mlp, x_train).model,
        "mlp_weights": quantize_weights(mlp).model,
        "logreg": logreg,
    }
    declared: dict[str, str] = {}
    inputs: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(11)
    for stem, model in models.items():
        path = out / f"{stem}.onnx"
        onnx.save(model, path)
        meta = {p.key: p.value for p in model.metadata_props}
        declared[path.name] = declared[f"{stem}.ort"] = meta["carryon.min_onnxruntime"]
        to_ort(path, out)
        if stem.startswith(("trees", "ranker")):
            rows = rng.normal(size=(64, 5)).astype(np.float32) * 2
            rows[:, 4] = rng.integers(-1, 10, size=64) + rng.choice([0.0, 0.5], size=64)
            rows[::5, 1] = np.nan
        else:
            rows = synthetic_rows(SPEC, NAMES, 64, seed=12)
        inputs[stem] = rows
    np.savez(out / "inputs.npz", **inputs)
    return out, declared, out / "inputs.npz"


def _here(folder: Path, names: list[str], inputs: Path) -> dict[str, np.ndarray]:
    rows = np.load(inputs)
    found = {}
    for name in names:
        options = ort.SessionOptions()
        if name.endswith(".ort"):
            options.add_session_config_entry("session.load_model_format", "ORT")
        session = ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        found[name] = session.run(None, {"features": rows[name.split(".")[0]]})[0]
    return found


def _run_in(release: str, folder: Path, names: list[str], inputs: Path, tmp: Path) -> tuple[dict[str, Any],
                                                                                          dict[str, np.ndarray]]:
    """Run the models in a fresh venv holding only onnxruntime ``release``.* (and what it needs)."""
    env_dir = tmp / f"ort-{release}"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"onnxruntime=={release}.*", "numpy<2.3"],
                   check=True, capture_output=True)
    result = subprocess.run([str(python), "-c", RUNNER, str(inputs), json.dumps(names), str(folder),
                             str(tmp / f"out-{release}.npz")], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["version"].startswith(release + "."), report
    with np.load(tmp / f"out-{release}.npz") as out:
        return report, {k: out[k] for k in out.files}


def test_every_model_runs_alike_in_the_runtime_it_declares(exported: tuple[Path, dict[str, str], Path],
                                                           tmp_path: Path) -> None:
    folder, declared, inputs = exported
    names = sorted(declared)
    assert {declared[n] for n in names} == {MIN_ONNXRUNTIME, TREE_ENSEMBLE_ONNXRUNTIME}
    newest = max(set(declared.values()), key=lambda v: tuple(int(p) for p in v.split(".")))
    report, outputs = _run_in(newest, folder, names, inputs, tmp_path)
    assert report["errors"] == {}
    for name, expected in _here(folder, names, inputs).items():
        np.testing.assert_allclose(outputs[name], expected, rtol=0, atol=1e-6, err_msg=name)


def test_one_release_earlier_trees_are_refused_and_networks_run(exported: tuple[Path, dict[str, str], Path],
                                                                tmp_path: Path) -> None:
    folder, declared, inputs = exported
    names = sorted(declared)
    report, outputs = _run_in(MIN_ONNXRUNTIME, folder, names, inputs, tmp_path)
    refused = {n for n in names if declared[n] == TREE_ENSEMBLE_ONNXRUNTIME}
    assert set(report["errors"]) == refused and len(refused) == 6
    assert all("TreeEnsemble(5)" in message for message in report["errors"].values()), report["errors"]
    for name, expected in _here(folder, sorted(set(names) - refused), inputs).items():
        np.testing.assert_allclose(outputs[name], expected, rtol=0, atol=1e-6, err_msg=name)
