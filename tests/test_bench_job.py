"""The benchmark job on tiny models: layouts it reads, the report it writes, budgets, refusals.

Models are built here with onnx.helper (a logistic CTA model and a linear bonus scorer), laid
out as a bundle, an export dir and a flat dir. Settings are tiny; no assertion is about speed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from benchmarks.device import BenchError, BenchSettings, load_report, run_bench
from benchmarks.device._budgets import verdict, verdicts
from benchmarks.device._device import check_device_id, cpu_model, looks_emulated
from benchmarks.device._inputs import default_spec
from benchmarks.device._schema import check_report, report_schema, validate
from pipeline.cli import app
from pipeline.params import DeviceProfile

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 21
TINY = BenchSettings(threads=1, warmup=5, min_iterations=50, time_budget_s=2.0, session_repeats=2)
TRAIN_STACK = ("polars", "pandas", "pyarrow", "duckdb", "sklearn", "lightgbm", "mlflow", "dvc")
PROFILES = {
    "generous": DeviceProfile("generous", p99_us=1e9, session_create_ms=1e7, peak_rss_mib=1e6),
    "tiny-memory": DeviceProfile("tiny-memory", p99_us=1e9, session_create_ms=1e7, peak_rss_mib=1.0),
}


def _weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.1, (WIDTH, 1)).astype(np.float32), np.asarray([0.05 * seed], dtype=np.float32)


def make_model(path: Path, kind: str, version: int, family: str = "logreg", seed: int = 1,
               metadata: bool = True) -> Path:
    """A CTA model (sigmoid of a linear score, [N, 1]) or a bonus scorer (linear score, [N])."""
    w, b = _weights(seed)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("MatMul", ["features", "w"], ["z0"]), helper.make_node("Add", ["z0", "b"], ["z"])]
    if kind == "cta":
        nodes.append(helper.make_node("Sigmoid", ["z"], ["probability"]))
        output = helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])
    else:
        inits.append(numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "flat"))
        nodes.append(helper.make_node("Reshape", ["z", "flat"], ["score"]))
        output = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])
    graph = helper.make_graph(nodes, f"tiny-{kind}", [helper.make_tensor_value_info(
        "features", TensorProto.FLOAT, ["N", WIDTH])], [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    if metadata:
        helper.set_model_props(model, {"carryon.kind": kind, "carryon.registered_model": kind,
                                       "carryon.version": str(version), "carryon.family": family,
                                       "carryon.min_onnxruntime": "1.20"})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def expected(kind: str, seed: int, x: np.ndarray) -> np.ndarray:
    w, b = _weights(seed)
    z = (x.astype(np.float64) @ w.astype(np.float64) + b).ravel()
    out: np.ndarray = 1 / (1 + np.exp(-z)) if kind == "cta" else z
    return out


def make_ort(onnx_path: Path, ort_path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(ort_path)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_bundle(root: Path, golden_offset: float = 0.0) -> Path:
    spec = default_spec()
    models = {}
    for kind, seed in (("cta", 1), ("bonus-ranker", 2)):
        onnx_path = make_model(root / "models" / f"{kind}.onnx", kind, version=3 + seed, seed=seed)
        make_ort(onnx_path, root / "models" / f"{kind}.ort")
        models[kind] = {"file": f"models/{kind}.onnx", "ort_file": f"models/{kind}.ort", "sha256": sha(onnx_path),
                        "registered_model": kind, "version": 3 + seed, "family": "logreg"}
    (root / "manifest.json").write_text(json.dumps({"schema": 1, "creator_id": "cr-01", "bundle_version": 7,
                                                    "models": models}))
    (root / "feature_spec.json").write_text(spec.to_json())
    variants = [{"variant": f"v{i}", "features": [float(i), 0.1 * i, float(i % 2)]} for i in range(5)]
    bonuses = [{"bonus_id": f"b{i}", "features": [float(i % 6), 10.0 + i, 0.0]} for i in range(7)]
    (root / "catalog.json").write_text(json.dumps({"schema": 1, "creator_id": "cr-01", "variants": variants,
                                                   "bonuses": bonuses}))
    rng = np.random.default_rng(5)
    cases = []
    for kind, seed in (("cta", 1), ("bonus-ranker", 2)):
        x = rng.uniform(0, 3, (4, WIDTH)).astype(np.float32)
        cases.append({"model": kind, "inputs": x.tolist(), "expected": (expected(kind, seed, x) + golden_offset)
                      .tolist()})
    (root / "golden.json").write_text(json.dumps({"schema": 1, "atol": 1e-5, "cases": cases}))
    return root


def make_export(root: Path) -> Path:
    """data/export layout: cta/v3 float with .ort; cta/v4 with an int8 file (the deployed one); bonus-ranker/v5."""
    make_ort(make_model(root / "cta/v3/model.onnx", "cta", 3, seed=3), root / "cta/v3/model.ort")
    make_model(root / "cta/v4/model.onnx", "cta", 4, family="mlp", seed=4)
    make_ort(make_model(root / "cta/v4/model.int8.onnx", "cta", 4, family="mlp", seed=6),
             root / "cta/v4/model.int8.ort")
    make_ort(make_model(root / "bonus-ranker/v5/model.onnx", "bonus-ranker", 5, seed=5),
             root / "bonus-ranker/v5/model.ort")
    (root / "allowlist.json").write_text("{}")  # other files in the export dir are ignored
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def bundle_report(bundle: Path) -> dict[str, Any]:
    return run_bench([bundle], TINY, "test-box", "generous", PROFILES, fmt="both", emulated=False)


@pytest.fixture(scope="module")
def export_report(export_dir: Path) -> dict[str, Any]:
    return run_bench([export_dir], TINY, "test-box", None, None, fmt="both", emulated=False)


def _write(tmp_path: Path, report: dict[str, Any], name: str = "report.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return path


# --- the report ----------------------------------------------------------------------------------


def test_bundle_report_has_every_model_both_formats_and_validates(bundle_report: dict[str, Any], bundle: Path,
                                                                  tmp_path: Path) -> None:
    assert load_report(_write(tmp_path, bundle_report)) == bundle_report
    assert bundle_report["source"] == {"kind": "bundle", "creator_id": "cr-01", "bundle_version": 7}
    files = [m["file"] for m in bundle_report["models"]]
    assert files == ["models/bonus-ranker.onnx", "models/bonus-ranker.ort", "models/cta.onnx", "models/cta.ort"]
    by_file = {m["file"]: m for m in bundle_report["models"]}
    for kind in ("cta", "bonus-ranker"):
        onnx_entry, ort_entry = by_file[f"models/{kind}.onnx"], by_file[f"models/{kind}.ort"]
        assert onnx_entry["sha256"] == onnx_entry["onnx_sha256"] == sha(bundle / "models" / f"{kind}.onnx")
        assert ort_entry["sha256"] == sha(bundle / "models" / f"{kind}.ort")
        assert ort_entry["onnx_sha256"] == onnx_entry["sha256"]  # the .ort is matched through its ONNX
        assert (onnx_entry["format"], ort_entry["format"]) == ("onnx", "ort")
        assert onnx_entry["size"] == (bundle / "models" / f"{kind}.onnx").stat().st_size
    # Call shapes come from the creator's catalog: 5 variants, 7 bonuses.
    assert by_file["models/cta.onnx"]["call_rows"] == 5
    assert by_file["models/bonus-ranker.onnx"]["call_rows"] == 7
    assert by_file["models/cta.onnx"]["version"] == 4 and by_file["models/bonus-ranker.ort"]["version"] == 5


def test_figures_are_measured_as_configured(bundle_report: dict[str, Any]) -> None:
    assert bundle_report["settings"] == {"threads": 1, "warmup": 5, "min_iterations": 50, "time_budget_s": 2.0,
                                         "session_repeats": 2}
    for m in bundle_report["models"]:
        lat = m["latency_us"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert m["iterations"] == 50 and m["time_budget_exhausted"] is False
        assert m["session_create_ms"] > 0 and m["session_create_first_ms"] > 0
        assert m["throughput_per_s"] > 0 and m["peak_rss_mib"] > 1
        assert m["call_api"] == "run_with_iobinding"


def test_golden_vectors_of_a_bundle_are_checked(bundle_report: dict[str, Any], tmp_path: Path) -> None:
    for m in bundle_report["models"]:
        assert m["golden"]["cases"] == 4 and m["golden"]["passed"] is True
        assert m["golden"]["max_abs_diff"] <= 1e-5
    wrong = run_bench([make_bundle(tmp_path / "b", golden_offset=0.01)], TINY, "test-box", fmt="onnx")
    assert [m["golden"]["passed"] for m in wrong["models"]] == [False, False]
    assert all(m["golden"]["max_abs_diff"] == pytest.approx(0.01, abs=1e-4) for m in wrong["models"])


def test_export_dir_measures_the_deployed_file(export_report: dict[str, Any], export_dir: Path) -> None:
    by_file = {m["file"]: m for m in export_report["models"]}
    assert sorted(by_file) == ["bonus-ranker/v5/model.onnx", "bonus-ranker/v5/model.ort", "cta/v3/model.onnx",
                               "cta/v3/model.ort", "cta/v4/model.int8.onnx", "cta/v4/model.int8.ort"]
    assert by_file["cta/v4/model.int8.ort"]["onnx_sha256"] == sha(export_dir / "cta/v4/model.int8.onnx")
    assert by_file["cta/v3/model.ort"]["onnx_sha256"] == sha(export_dir / "cta/v3/model.onnx")
    assert by_file["cta/v4/model.int8.onnx"]["family"] == "mlp"
    # No catalog beside an export dir: the default call shapes.
    assert by_file["cta/v3/model.onnx"]["call_rows"] == 8
    assert by_file["bonus-ranker/v5/model.onnx"]["call_rows"] == 20
    assert export_report["source"]["kind"] == "export"
    assert all(m["budgets"] == {} and m["golden"] is None for m in export_report["models"])  # no params given


def test_flat_dir_and_file_list(tmp_path: Path) -> None:
    make_model(tmp_path / "flat" / "a.onnx", "cta", 9)
    make_model(tmp_path / "flat" / "b.onnx", "bonus-ranker", 2)
    flat = run_bench([tmp_path / "flat"], TINY, "test-box")
    assert [(m["file"], m["kind"], m["version"]) for m in flat["models"]] == [
        ("a.onnx", "cta", 9), ("b.onnx", "bonus-ranker", 2)]
    assert flat["source"]["kind"] == "files"
    listed = run_bench([tmp_path / "flat" / "b.onnx"], TINY, "test-box")
    assert [m["file"] for m in listed["models"]] == ["b.onnx"]


def test_time_budget_stops_the_loop_and_says_so(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m.onnx", "cta", 1)
    capped = BenchSettings(warmup=0, min_iterations=10**9, time_budget_s=0.2, session_repeats=1)
    entry = run_bench([model], capped, "test-box")["models"][0]
    assert entry["time_budget_exhausted"] is True
    assert 100 <= entry["iterations"] < 10**9  # at least 100 calls so the p99 means something


def test_peak_rss_is_the_childs_own_not_the_parents(tmp_path: Path) -> None:
    """On Linux ru_maxrss carries the parent's peak into a child: a 300 MiB parent must not show."""
    model = make_model(tmp_path / "m.onnx", "cta", 1)
    ballast = np.ones(300 * 2**20, dtype=np.uint8)  # touched pages: resident in this process
    entry = run_bench([model], TINY, "test-box")["models"][0]
    assert int(ballast[-1]) == 1
    assert entry["peak_rss_mib"] < 300


def test_threads_setting_reaches_the_report(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m.onnx", "cta", 1)
    report = run_bench([model], BenchSettings(threads=2, warmup=0, min_iterations=20, session_repeats=1), "t")
    assert report["settings"]["threads"] == 2


# --- budgets -------------------------------------------------------------------------------------

FIGURES = {"latency_us": {"p50": 100.0, "p95": 300.0, "p99": 600.0, "mean": 120.0},
           "session_create_ms": 120.0, "peak_rss_mib": 80.0}


@pytest.mark.parametrize(("profile", "failures"), [
    (DeviceProfile("at-limit", 600.0, 120.0, 80.0), []),
    (DeviceProfile("slow-p99", 599.0, 120.0, 80.0), ["p99_us 600 > budget 599"]),
    (DeviceProfile("cold", 1000.0, 100.0, 80.0), ["session_create_ms 120 > budget 100"]),
    (DeviceProfile("small", 1000.0, 500.0, 64.0), ["peak_rss_mib 80 > budget 64"]),
    (DeviceProfile("all", 10.0, 1.0, 1.0), ["p99_us 600 > budget 10", "session_create_ms 120 > budget 1",
                                            "peak_rss_mib 80 > budget 1"]),
])
def test_budget_verdicts_with_fixed_figures(profile: DeviceProfile, failures: list[str]) -> None:
    assert verdict(FIGURES, profile) == {"met": not failures, "failures": failures}


def test_emulated_figures_never_judge_budgets() -> None:
    profiles = {"phone-low": DeviceProfile("phone-low", 1.0, 1.0, 1.0)}
    assert verdicts(FIGURES, profiles, emulated=True) == {}
    assert verdicts(FIGURES, profiles, emulated=False)["phone-low"]["met"] is False


def test_report_carries_a_verdict_per_profile(bundle_report: dict[str, Any]) -> None:
    for m in bundle_report["models"]:
        assert m["budgets"]["generous"] == {"met": True, "failures": []}
        assert m["budgets"]["tiny-memory"]["met"] is False
        assert [f.split()[0] for f in m["budgets"]["tiny-memory"]["failures"]] == ["peak_rss_mib"]


def test_emulated_report_has_no_verdicts_and_validates(bundle: Path, tmp_path: Path) -> None:
    report = run_bench([bundle], TINY, "qemu-box", "generous", PROFILES, emulated=True)
    assert report["device"]["emulated"] is True
    assert all(m["budgets"] == {} for m in report["models"])
    assert load_report(_write(tmp_path, report))["device"]["emulated"] is True


# --- device identity -----------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "cpuinfo", "env", "emulated"), [
    ("aarch64", {"vendor_id": "GenuineIntel", "model name": "Intel Xeon"}, {}, True),  # qemu-user reads the host's
    ("aarch64", {"vendor_id": "AuthenticAMD"}, {}, True),
    ("aarch64", {"CPU implementer": "0x41", "CPU part": "0xd0b"}, {}, False),
    ("x86_64", {"vendor_id": "GenuineIntel"}, {}, False),
    ("x86_64", {"vendor_id": "GenuineIntel"}, {"CARRYON_EMULATED": "1"}, True),
    ("aarch64", {}, {"CARRYON_EMULATED": "0"}, False),
])
def test_emulation_is_detected(arch: str, cpuinfo: dict[str, str], env: dict[str, str], emulated: bool) -> None:
    assert looks_emulated(arch, cpuinfo, env) is emulated


@pytest.mark.parametrize(("cpuinfo", "model"), [
    ({"model name": "AMD EPYC 7B13", "vendor_id": "AuthenticAMD"}, "AMD EPYC 7B13"),
    ({"Model": "Raspberry Pi 5 Model B Rev 1.0", "Hardware": "BCM2835"}, "Raspberry Pi 5 Model B Rev 1.0"),
    ({"Hardware": "Qualcomm Technologies, Inc SM8350"}, "Qualcomm Technologies, Inc SM8350"),
])
def test_cpu_model_from_cpuinfo(cpuinfo: dict[str, str], model: str) -> None:
    assert cpu_model(cpuinfo) == model


def test_device_block_names_the_runtime(bundle_report: dict[str, Any]) -> None:
    import platform

    import onnxruntime as ort

    device = bundle_report["device"]
    assert device["device_id"] == "test-box" and device["profile"] == "generous"
    assert device["arch"] == platform.machine() and device["python"] == platform.python_version()
    assert device["onnxruntime"] == ort.__version__ and "CPUExecutionProvider" in device["providers"]
    assert device["cores"] >= 1 and device["emulated"] is False


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("device_id", "match"), [
    (None, "device id is missing: pass --device-id"),
    ("", "device id is missing"),
    ("   ", "device id is missing"),
    ("my phone", "must be 1-128 characters"),
    ("-lead", "must be 1-128 characters"),
    ("x" * 129, "must be 1-128 characters"),
])
def test_bad_device_ids_are_refused(device_id: str | None, match: str) -> None:
    with pytest.raises(BenchError, match=match):
        check_device_id(device_id)


def test_missing_device_id_refuses_before_measuring(bundle: Path) -> None:
    with pytest.raises(BenchError, match="CARRYON_DEVICE_ID"):
        run_bench([bundle], TINY, None)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("threads", 0, "threads must be an integer >= 1, got 0; fix --threads"),
    ("threads", True, "threads must be an integer >= 1"),
    ("threads", 1.5, "threads must be an integer >= 1"),
    ("warmup", -1, "warmup must be an integer >= 0"),
    ("min_iterations", 0, "min_iterations must be an integer >= 1"),
    ("session_repeats", 0, "session_repeats must be an integer >= 1"),
    ("time_budget_s", 0, r"time_budget_s must be in \(0, 3600\]"),
])
def test_bad_settings_are_refused(field: str, value: object, match: str) -> None:
    with pytest.raises(BenchError, match=match):
        BenchSettings(**{field: value})  # type: ignore[arg-type]


def _bad_layouts(tmp: Path) -> list[tuple[list[Path], str, str]]:
    (tmp / "empty").mkdir()
    (tmp / "garbage").mkdir()
    (tmp / "garbage" / "m.onnx").write_bytes(b"not a model")
    make_model(tmp / "nometa" / "m.onnx", "cta", 1, metadata=False)
    broken = make_bundle(tmp / "broken")
    (broken / "models" / "cta.ort").unlink()
    (tmp / "noort" / "cta" / "v1").mkdir(parents=True)
    make_model(tmp / "noort" / "cta" / "v1" / "model.onnx", "cta", 1)
    (tmp / "badmanifest").mkdir()
    (tmp / "badmanifest" / "manifest.json").write_text("{}")
    (tmp / "killswitch").mkdir()
    (tmp / "killswitch" / "manifest.json").write_text('{"models": {}, "personalization": false}')
    (tmp / "notes.txt").write_text("x")
    return [
        ([tmp / "missing"], "onnx", "no such file or directory"),
        ([tmp / "empty"], "onnx", "no models to measure"),
        ([tmp / "garbage"], "onnx", "onnxruntime cannot load the model"),
        ([tmp / "nometa"], "onnx", "metadata carryon.kind is None"),
        ([broken], "both", r"models/cta.ort.*missing; copy the whole bundle"),
        ([tmp / "noort"], "ort", r"the .ort file of cta/v1/model.onnx is missing"),
        ([tmp / "badmanifest"], "onnx", "not a bundle manifest"),
        ([tmp / "killswitch"], "onnx", r"carries no models \(it is a kill-switch bundle\): nothing to measure"),
        ([tmp / "notes.txt"], "onnx", r"not a model file \(expected .onnx or .ort\)"),
        ([tmp / "empty", tmp / "notes.txt"], "onnx", "one directory, or model files only"),
        ([], "onnx", "no models given"),
        ([tmp / "nometa"], "tflite", "format must be one of onnx, ort, both"),
    ]


def test_bad_model_inputs_are_refused(tmp_path: Path) -> None:
    for models, fmt, match in _bad_layouts(tmp_path):
        with pytest.raises(BenchError, match=match):
            run_bench(models, TINY, "test-box", fmt=fmt)


def test_unknown_profile_is_refused(bundle: Path) -> None:
    with pytest.raises(BenchError, match=r"profile 'phone-mid' is not in params\.yaml bench\.profiles"):
        run_bench([bundle], TINY, "test-box", "phone-mid", PROFILES)


# --- reading reports back ------------------------------------------------------------------------


def _without(report: dict[str, Any], *path: str | int) -> dict[str, Any]:
    out = copy.deepcopy(report)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _with(report: dict[str, Any], value: object, *path: str | int) -> dict[str, Any]:
    out = copy.deepcopy(report)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def test_bad_reports_are_refused(bundle_report: dict[str, Any], tmp_path: Path) -> None:
    emulated_with_verdicts = _with(bundle_report, True, "device", "emulated")
    cases: list[tuple[object, str]] = [
        (_without(bundle_report, "device", "device_id"), r"\$.device: required field 'device_id' is missing"),
        (_without(bundle_report, "device", "arch"), r"\$.device: required field 'arch' is missing"),
        (_without(bundle_report, "device"), "required field 'device' is missing"),
        (_with(bundle_report, "", "device", "device_id"), r"\$.device.device_id: '' does not match"),
        (_with(bundle_report, 2, "schema"), "report schema 2 is not supported"),
        (_with(bundle_report, "other", "kind"), "not a carryon bench report"),
        ([1, 2], "not a carryon bench report"),
        (_with(bundle_report, "abc", "models", 0, "sha256"), r"\$.models\[0\].sha256: 'abc' does not match"),
        (_with(bundle_report, "8", "models", 1, "version"), r"\$.models\[1\].version: expected integer, got string"),
        (_with(bundle_report, True, "settings", "threads"), "settings.threads: expected integer, got boolean"),
        (_with(bundle_report, [], "models"), "must have at least 1 items"),
        (_with(bundle_report, 1, "extra"), "unexpected field 'extra'"),
        (_with(bundle_report, "yesterday", "created_at"), "created_at: 'yesterday' does not match"),
        (emulated_with_verdicts, r"budgets: must have at most 0 fields"),
    ]
    for i, (report, match) in enumerate(cases):
        with pytest.raises(BenchError, match=match):
            load_report(_write(tmp_path, report, f"r{i}.json"))  # type: ignore[arg-type]
    assert all(m["budgets"] for m in bundle_report["models"])  # the emulated case above had verdicts to refuse


def test_unreadable_reports_are_refused(bundle_report: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="cannot read the bench report"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BenchError, match="invalid JSON"):
        load_report(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text(json.dumps(bundle_report).replace('"p99": ', '"p99": NaN, "x": ', 1))
    with pytest.raises(BenchError, match="NaN is not a JSON number"):
        load_report(tmp_path / "nan.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BenchError, match="not UTF-8"):
        load_report(tmp_path / "bin.json")


def _paths(node: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path of a report, except the profile names under budgets (free-form keys)."""
    out: list[tuple[str | int, ...]] = []
    if isinstance(node, dict) and (not prefix or prefix[-1] != "budgets"):
        for key, value in node.items():
            out += [(*prefix, key), *_paths(value, (*prefix, key))]
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_deleted_field_or_wrong_type_is_refused(bundle_report: dict[str, Any], data: st.DataObject) -> None:
    paths = _paths(bundle_report)
    path = data.draw(st.sampled_from(paths))
    mutation = data.draw(st.sampled_from(["delete", "nested-list"]))
    if mutation == "delete" and isinstance(path[-1], int):
        mutation = "nested-list"  # deleting a list item leaves a valid (shorter) list
    broken = _without(bundle_report, *path) if mutation == "delete" else _with(bundle_report, [[]], *path)
    with pytest.raises(BenchError):
        check_report(broken, "mutated")


def test_validator_follows_json_schema_rules() -> None:
    schema = {"type": "object", "required": ["n"], "properties": {
        "n": {"type": "integer", "minimum": 1}, "x": {"type": "number", "exclusiveMinimum": 0},
        "o": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 2}]}}}
    assert validate({"n": 2, "x": 0.5, "o": None}, schema) == []
    assert validate({"n": 2.0}, schema) == []  # 2.0 is an integer in JSON Schema
    assert validate({"n": True}, schema) == ["$.n: expected integer, got boolean"]
    assert validate({"n": 0}, schema) == ["$.n: must be >= 1, got 0"]
    assert validate({"n": 1, "x": 0}, schema) == ["$.x: must be > 0, got 0"]
    assert validate({"n": 1, "o": "a"}, schema)[0].startswith("$.o: matches none of the allowed forms")
    assert report_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_run_writes_the_report_with_budgets_from_params(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.json"
    result = CliRunner().invoke(app, [
        "bench", "run", "--bundle", str(bundle), "--out", str(out), "--device-id", "cli-box", "--profile", "laptop",
        "--params", str(ROOT / "params.yaml"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = load_report(out)
    assert report["device"]["profile"] == "laptop"
    assert report["settings"]["min_iterations"] == 3000  # from params.yaml bench
    assert set(report["models"][0]["budgets"]) == {"phone-low", "phone-high", "arm-rig", "laptop"}
    assert "cli-box" in result.output and "models/cta.onnx" in result.output
    assert not list(out.parent.glob(".*.tmp"))  # written atomically: no temp file left


def test_cli_takes_the_device_id_from_the_environment(tmp_path: Path) -> None:
    make_model(tmp_path / "m" / "a.onnx", "cta", 1)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["bench", "run", "--models", str(tmp_path / "m"), "--out", str(out),
                                      "--params", str(tmp_path / "absent.yaml"), "--json"],
                                env={"CARRYON_DEVICE_ID": "env-box"})
    assert result.exit_code == 1  # the named params file does not exist
    assert "absent.yaml" in result.output
    result = CliRunner().invoke(app, ["bench", "run", "--models", str(tmp_path / "m"), "--out", str(out), "--json",
                                      "--emulated"], env={"CARRYON_DEVICE_ID": "env-box"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["device"] == load_report(out)["device"]
    assert load_report(out)["device"]["device_id"] == "env-box"
    assert load_report(out)["device"]["emulated"] is True


@pytest.mark.parametrize(("args", "match"), [
    (["--out", "r.json", "--device-id", "a"], "pass exactly one of --bundle DIR or --models DIR"),
    (["--models", ".", "--bundle", ".", "--out", "r.json", "--device-id", "a"], "pass exactly one of"),
    (["--models", "missing", "--out", "r.json", "--device-id", "a"], "missing: no such file or directory"),
    (["--models", "m", "--out", "r.json"], "device id is missing"),
    (["--models", "m", "--out", "r.json", "--device-id", "a", "--threads", "0"], "threads must be an integer >= 1"),
    (["--models", "m", "--out", "r.json", "--device-id", "a", "--format", "tflite"], "format must be one of"),
])
def test_cli_refusals_are_one_line(args: list[str], match: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    make_model(tmp_path / "m" / "a.onnx", "cta", 1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CARRYON_DEVICE_ID", raising=False)
    result = CliRunner().invoke(app, ["bench", "run", *args])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carryon: error: ") and match in lines[0]
    assert not (tmp_path / "r.json").exists()


# --- what the job imports ------------------------------------------------------------------------

PROBE = """
import json, sys
from pathlib import Path
import numpy as np
from benchmarks.device import BenchSettings, run_bench
from benchmarks.device import _child
stack = sys.argv[2].split(",")
report = run_bench([sys.argv[1]], BenchSettings(warmup=1, min_iterations=10, session_repeats=1), "probe")
np.savez(Path(sys.argv[3]) / "in.npz", pool=np.zeros((2, 8, 21), np.float32))
job = {"model": sys.argv[1], "inputs": str(Path(sys.argv[3]) / "in.npz"), "threads": 1, "warmup": 1,
       "min_iterations": 10, "time_budget_s": 1.0, "session_repeats": 1}
_child.measure(job)
print(json.dumps({"models": len(report["models"]),
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in stack)}))
"""


def test_job_and_child_import_no_training_stack(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m.onnx", "cta", 1)
    result = subprocess.run([sys.executable, "-c", PROBE, str(model), ",".join(TRAIN_STACK), str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {"models": 1, "loaded": []}


def test_cli_runs_a_bundle_tar_and_refuses_links_in_it(bundle: Path, tmp_path: Path) -> None:
    import tarfile

    packed = tmp_path / "1.tar"
    with tarfile.open(packed, "w") as archive:
        for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
            archive.add(path, arcname=path.relative_to(bundle).as_posix())
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["bench", "run", "--bundle", str(packed), "--out", str(out),
                                      "--device-id", "tar-box", "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert {m["file"] for m in load_report(out)["models"]} >= {"models/cta.onnx"}
    assert str(tmp_path) not in out.read_text()  # the temp extraction dir leaves no trace in the report

    hostile = tmp_path / "2.tar"
    with tarfile.open(hostile, "w") as archive:
        link = tarfile.TarInfo("models/cta.onnx")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    result = CliRunner().invoke(app, ["bench", "run", "--bundle", str(hostile), "--out", str(tmp_path / "r2.json"),
                                      "--device-id", "tar-box"])
    assert result.exit_code == 1
    assert "not a regular file" in result.output and not (tmp_path / "r2.json").exists()
