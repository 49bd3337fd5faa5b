"""Native predict against onnxruntime, per model and for the whole edge decision, in one process.

Usage (from the project root, with the project's venv)::

    python benchmarks/compare_decision.py                 # the project's MLflow store (alias candidate)
    python benchmarks/compare_decision.py --quick         # fewer calls
    python benchmarks/compare_decision.py --source tiny   # trains a small world in a temp dir first

Models: by default the versions carrying the alias ``candidate`` in the project's MLflow
store (the default run of ``dvc repro``), natives loaded from MLflow as the export stage
loads them, exported files from ``metrics/export.json`` under ``data/export``; the
quantized comparison uses the newest CTA version with an int8 export (the MLP).
``--source tiny`` runs simulate -> ingest -> features -> train -> record -> export on a
small world in a temporary MLflow store instead (the same code paths, small data).

The issue's baseline is the scikit-learn API objects models/ trains (``LGBMClassifier``,
``LGBMRanker``): MLflow holds only their boosters, so for the LightGBM decision models the
wrappers are refit in-process with the training code and settings and refused unless they
predict exactly as the logged boosters (the same trees). The logged natives stay as a second,
stricter baseline: for LightGBM the ``Booster``, i.e. the raw C API.

Per model, on the real call shape (one row per CTA variant, one per bonus): (a) the native
predict as logged (LightGBM ``Booster`` / scikit-learn ``Pipeline``) and, for the decision's
LightGBM models, the scikit-learn wrapper's, (b) onnxruntime on the float ONNX, (c) onnxruntime on the
int8 ONNX where the version has one; each onnxruntime figure both through ``run`` and
through ``run_with_iobinding`` with pre-bound buffers (what the edge runtime uses). Then the
whole edge decision (online features from the session's events + every CTA variant + every
bonus + the exploration draw) through ``edge.runtime.EdgeRuntime`` on a bundle-like
directory of the same models, against the same steps with the wrappers' and the logged models' predict.
Single thread everywhere: OMP/BLAS threads 1, LightGBM ``num_threads=1``, onnxruntime one
intra-op thread. Figures are µs per call (p50/p95/p99/mean), timed with
``time.perf_counter_ns``; the contenders of one comparison run in alternating blocks (10,
each warmed up), so that a shared machine's slow spells hit them alike. Per-model inputs are
one fixed random matrix of the call shape; decisions cycle through generated sessions.
Stdout is ONE JSON document; progress on stderr.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy, scikit-learn and LightGBM load their thread pools

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from features.online import SessionFeatures, ViewerHistory  # noqa: E402
from features.policy import CtaPolicy, ExplorationSettings  # noqa: E402
from features.spec import FeatureSpec  # noqa: E402

KINDS = {"cta": "cta", "bonus-ranker": "bonus-ranker"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(ns: list[int]) -> dict[str, float]:
    us = np.asarray(ns, dtype=np.float64) / 1e3
    return {"p50": round(float(np.percentile(us, 50)), 2), "p95": round(float(np.percentile(us, 95)), 2),
            "p99": round(float(np.percentile(us, 99)), 2), "mean": round(float(us.mean()), 2), "calls": int(us.size)}


def time_interleaved(calls: dict[str, Callable[[Any], object]], args: list[Any], iterations: int, warmup: int,
                     blocks: int = 10) -> dict[str, dict[str, float]]:
    """Time every call on the same arguments in alternating blocks (A B C, B C A, ...; each block warmed up
    first), so that a shared machine's slow spells hit all of them alike while each runs with its own warm
    caches, as on a device that only decides; ``args`` are cycled through. Each block starts from a collected
    heap (``gc.collect()``, untimed): otherwise the objects one contender leaves behind are traversed by the
    collections the next one triggers (measured: the edge decision's p99 rose from about 185 to 220 µs when
    it ran after the scikit-learn wrappers' blocks). A contender's own collections stay in its figures."""
    timer = time.perf_counter_ns
    names = list(calls)
    ns: dict[str, list[int]] = {name: [] for name in names}
    per_block, warm = max(1, iterations // blocks), max(1, warmup // blocks)
    for block in range(blocks):
        shift = block % len(names)
        for name in names[shift:] + names[:shift]:
            call = calls[name]
            gc.collect()
            for i in range(warm + per_block):
                arg = args[(block * per_block + i) % len(args)]
                start = timer()
                call(arg)
                took = timer() - start
                if i >= warm:
                    ns[name].append(took)
    return {name: summary(values) for name, values in ns.items()}


@dataclass
class Source:
    """Where the models come from: an MLflow client, the feature outputs and the export index."""

    client: Any
    features_dir: Path
    export_dir: Path
    files: dict[tuple[str, int], dict[str, str]]
    versions: dict[str, int]  # registered model -> version of the edge decision
    quantized: tuple[str, int] | None  # a version with an int8 export
    exploration: ExplorationSettings
    label: str
    train: Any  # the TrainConfig the candidates were trained with
    keep: list[Any] = field(default_factory=list)


def project_source() -> Source:
    from pipeline.params import load_params
    from pipeline.tracking import open_tracking

    client = open_tracking(ROOT, os.environ)
    index = json.loads((ROOT / "metrics" / "export.json").read_text())
    files = {(v["name"], int(v["version"])): v["files"] for v in index["versions"]}
    versions = {}
    for name in KINDS:
        alias = client.get_registered_model(name).aliases.get("candidate")
        if alias is None:
            raise SystemExit(f"registered model {name!r} has no `candidate` alias; run `dvc repro` first")
        versions[name] = int(alias)
    quantized = max((key for key, f in files.items() if key[0] == "cta" and "int8_onnx" in f), default=None,
                    key=lambda key: key[1])
    params = load_params(ROOT / "params.yaml")
    return Source(client, ROOT / "data" / "features", ROOT / "data" / "export", files, versions, quantized,
                  params.policy.exploration, "project MLflow store, alias candidate", params.train)


def tiny_source(work: Path) -> Source:
    """simulate -> ingest -> features -> train -> record -> export on a small world, in a temp MLflow store."""
    from export.stage import export_versions
    from models import _plots
    from models.bonus import train_bonus
    from models.cta import train_cta
    from pipeline.record import record_candidates
    from pipeline.tracking import open_tracking

    sys.path.insert(0, str(ROOT))
    from tests.world import run_data_stages, small_params

    params = small_params()
    params = replace(params, evaluation=replace(params.evaluation, n_bootstrap=20),
                     train=replace(params.train, lightgbm=replace(params.train.lightgbm, n_estimators=60)))
    log("tiny source: data stages ...")
    world = run_data_stages(work / "world", params)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    client = open_tracking(work, os.environ)
    log("tiny source: training ...")
    candidates = train_cta(world.features, params.train, params.evaluation, params.policy.exploration)
    candidates += train_bonus(world.features, params.train, params.evaluation)
    recorded = record_candidates(client, candidates, {"git_commit": "benchmark"})
    for c in candidates:
        _plots.close(c.figures)
    log("tiny source: export ...")
    results = export_versions(client, [(r.name, r.version) for r in recorded], world.features, work / "export",
                              params.train.test_fraction)
    files = {(r.name, r.version): r.files for r in results}
    pick = {"cta": "lightgbm", "bonus-ranker": "lambdarank"}  # the default run's candidate families
    versions = {r.name: r.version for r in results if r.family == pick[r.name]}
    quantized = next(((r.name, r.version) for r in results if "int8_onnx" in r.files), None)
    return Source(client, world.features, work / "export", files, versions, quantized, params.policy.exploration,
                  "tiny world trained in a temporary MLflow store", params.train)


def load_native(client: Any, name: str, version: int) -> tuple[Any, str]:
    import mlflow

    mv = client.get_model_version(name, str(version))
    family = client.get_run(mv.run_id).data.tags.get("carryon.family", "")
    uri = f"models:/{name}/{version}"
    if family in ("lightgbm", "lambdarank"):
        return mlflow.lightgbm.load_model(uri), family
    return mlflow.sklearn.load_model(uri), family


def sklearn_wrapper(source: Source, name: str, booster: Any) -> Any:
    """The scikit-learn API object (``LGBMClassifier`` / ``LGBMRanker``) that models/ trains, for a logged booster.

    MLflow holds the booster only (LightGBM's text format), and LightGBM has no public way to
    put a booster into a wrapper, so the wrapper is refit with the training code and settings
    on the training split of the features with the rounds training chose (models/rounds.py refits
    them on that whole split; deterministic mode makes that the same trees), and refused unless it
    predicts exactly as the logged booster on that data: then both sides of a comparison run the same model.
    """
    from models._tables import load_bonus, load_catalog, load_cta, time_split
    from models.candidates import fit_kwargs, make_classifier, make_ranker
    from models.metrics import Slates

    config = source.train
    model: Any
    if name == "cta":
        cta = load_cta(source.features_dir, load_catalog(source.features_dir))
        cta_train = cta.subset(~time_split(cta.creator, cta.drop, cta.ts, config.test_fraction))
        model = make_classifier("lightgbm", cta.spec, cta.spec.cta_names, config)
        model.set_params(n_estimators=booster.num_trees())  # the rounds training chose (models.rounds)
        model.fit(cta_train.x, cta_train.y, **fit_kwargs(model, cta.spec, cta.spec.cta_names))
        x: np.ndarray = cta_train.x
        check = np.asarray(model.predict_proba(x, num_threads=1))[:, 1]
    else:
        bonus = load_bonus(source.features_dir)
        bonus_train = bonus.subset(~time_split(bonus.creator, bonus.drop, bonus.ts, config.test_fraction))
        model = make_ranker(config).set_params(n_estimators=booster.num_trees())
        model.fit(bonus_train.x, bonus_train.relevance, group=Slates.from_group_ids(bonus_train.slate).sizes,
                  **fit_kwargs(model, bonus.spec, bonus.spec.bonus_names))
        x = bonus_train.x
        check = np.asarray(model.predict(x, num_threads=1))
    logged = np.asarray(booster.predict(x, num_threads=1))
    if model.booster_.num_trees() != booster.num_trees() or not np.array_equal(check, logged):
        raise SystemExit(f"{name}: the refit scikit-learn wrapper does not predict as the logged booster "
                         f"(max diff {float(np.max(np.abs(check - logged))):.3g}); were params.yaml or "
                         "data/features changed since training? rerun `dvc repro`")
    return model


def native_predict(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Single-threaded predict through the model's own API: scikit-learn wrapper, Pipeline or raw Booster."""
    import lightgbm as lgb

    if isinstance(model, lgb.LGBMClassifier):
        return lambda x: np.asarray(model.predict_proba(x, num_threads=1))[:, 1]
    if hasattr(model, "predict_proba"):  # a scikit-learn Pipeline
        return lambda x: model.predict_proba(x)[:, 1]
    return lambda x: model.predict(x, num_threads=1)  # an LGBMRanker or a Booster


def ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if path.suffix == ".ort":
        options.add_session_config_entry("session.load_model_format", "ORT")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_calls(path: Path, x: np.ndarray) -> tuple[Callable[[], object], Callable[[], object], np.ndarray]:
    """(plain run, pre-bound run_with_iobinding, its output) for one model file on input ``x``."""
    sess = ort_session(path)
    out = sess.get_outputs()[0].name
    feed = {"features": x}
    result = np.asarray(sess.run([out], feed)[0])
    bound = np.empty_like(result)
    binding = sess.io_binding()
    binding.bind_input("features", "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
    binding.bind_output(out, "cpu", 0, np.float32, list(bound.shape), bound.ctypes.data)
    return (lambda: sess.run([out], feed)), (lambda: sess.run_with_iobinding(binding)), result.reshape(-1)


def catalog_entry(features_dir: Path) -> dict[str, Any]:
    full = json.loads((features_dir / "catalog.json").read_text())
    creator = max(full["creators"], key=lambda c: (len(c["variants"]), len(c["bonuses"])))
    keys = ("creator_id", "niche", "currency", "variants", "bonuses", "default_variant", "default_bonus_order")
    return {"schema": 1, **{k: creator[k] for k in keys}}


def bundle_dir(source: Source, out: Path) -> Path:
    """A contract-A bundle directory (unsigned, no golden vectors) of the source's decision models."""
    (out / "models").mkdir(parents=True)
    models = {}
    for name, version in source.versions.items():
        files = source.files[(name, version)]
        shutil.copy(source.export_dir / files["deploy_onnx"], out / "models" / f"{name}.onnx")
        shutil.copy(source.export_dir / files["ort"], out / "models" / f"{name}.ort")
        models[name] = {"file": f"models/{name}.onnx", "ort_file": f"models/{name}.ort", "version": version,
                        "quantization": "int8-qdq" if "int8_onnx" in files else "none", "registered_model": name,
                        "input": "features"}
    shutil.copy(source.features_dir / "feature_spec.json", out / "feature_spec.json")
    spec = FeatureSpec.load(out / "feature_spec.json")
    catalog = catalog_entry(source.features_dir)
    (out / "catalog.json").write_text(json.dumps(catalog))
    manifest = {"schema": 1, "creator_id": catalog["creator_id"], "bundle_version": 1, "personalization": True,
                "models": models, "feature_spec": {"file": "feature_spec.json", "hash": spec.hash},
                "exploration": source.exploration.to_dict()}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def make_sessions(n: int, seed: int) -> list[dict[str, Any]]:
    """Consented sessions a few minutes into a drop: a join, then chats, reactions, CTA impressions, clicks."""
    rng = np.random.default_rng(seed)
    base = 1_788_000_000  # seconds; a fixed day
    kinds = ["chat", "reaction", "cta_impression", "cta_click", "bonus_claim"]
    sessions = []
    for _ in range(n):
        start = base + int(rng.integers(0, 86_400))
        t = start + int(rng.integers(0, 600))
        events: list[dict[str, Any]] = [{
            "type": "join", "ts": _iso(t), "device": str(rng.choice(["phone", "desktop", "tv"])),
            "channel": str(rng.choice(["stream", "popup"])), "drop_started_at": _iso(start),
            "local_pickup": bool(rng.random() < 0.3)}]
        for _ in range(int(rng.integers(0, 12))):
            t += int(rng.integers(1, 40))
            events.append({"type": str(rng.choice(kinds, p=[0.5, 0.3, 0.1, 0.05, 0.05])), "ts": _iso(t),
                           "variant": "v", "propensity": 0.5, "bonus_id": "b", "slate_id": "s"})
        history = {"sessions": int(rng.integers(0, 5)), "enrolls": int(rng.integers(0, 2))}
        sessions.append({"consent": {"personalization": True}, "events": events, "history": history,
                         "at": _iso(t + int(rng.integers(1, 30)))})
    return sessions


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class NativeDecision:
    """The edge decision's steps with the native models' predict in place of onnxruntime."""

    def __init__(self, bundle: Path, cta: Any, bonus: Any) -> None:
        catalog = json.loads((bundle / "catalog.json").read_text())
        manifest = json.loads((bundle / "manifest.json").read_text())
        self.spec = FeatureSpec.load(bundle / "feature_spec.json")
        self.niche = catalog["niche"]
        self.variants = [v["variant"] for v in catalog["variants"]]
        self.cta_items = np.asarray([v["features"] for v in catalog["variants"]], np.float32)
        self.bonus_ids = np.asarray([b["bonus_id"] for b in catalog["bonuses"]], dtype=object)
        self.bonus_items = np.asarray([b["features"] for b in catalog["bonuses"]], np.float32)
        self.policy = CtaPolicy(ExplorationSettings.from_dict(manifest["exploration"]))
        self.cta, self.bonus = native_predict(cta), native_predict(bonus)
        self.rng = np.random.default_rng(0)

    def decide(self, session: dict[str, Any]) -> tuple[str, float, list[str]]:
        features = SessionFeatures(self.spec, creator_niche=self.niche, history=ViewerHistory(**session["history"]))
        for event in session["events"]:
            features.update(event)
        at = session["at"]
        scores = np.asarray(self.cta(features.cta_matrix(at, self.cta_items)), np.float64)
        choice, propensity = self.policy.decide(scores, self.rng)
        bonus = np.asarray(self.bonus(features.bonus_matrix(at, self.bonus_items)))
        order = np.argsort(-bonus, kind="stable")
        return self.variants[choice], propensity, self.bonus_ids[order].tolist()


def _no_arg(call: Callable[[], object]) -> Callable[[Any], object]:
    return lambda _: call()


def compare_models(source: Source, bundle: Path, wrappers: dict[str, Any], iterations: int,
                   warmup: int) -> list[dict[str, Any]]:
    catalog = json.loads((bundle / "catalog.json").read_text())
    spec = FeatureSpec.load(bundle / "feature_spec.json")
    rows = {"cta": len(catalog["variants"]), "bonus-ranker": len(catalog["bonuses"])}
    rng = np.random.default_rng(1)
    keys = sorted({*source.versions.items(), *([source.quantized] if source.quantized else [])})
    results = []
    for name, version in keys:
        native, family = load_native(source.client, name, version)
        source.keep.append(native)
        names = spec.cta_names if name == "cta" else spec.bonus_names
        x = np.asarray(rng.random((rows[name], len(names))) * 3, np.float32)
        predict = native_predict(native)
        files = source.files[(name, version)]
        log(f"{name} v{version} ({family}) ...")
        expected = np.asarray(predict(x), np.float64).reshape(-1)
        entry: dict[str, Any] = {"kind": name, "family": family, "version": version, "rows": rows[name],
                                 "native": _native_label(native)}
        calls = {"native_us": _no_arg(partial(predict, x))}
        wrapper = wrappers.get(name) if source.versions.get(name) == version else None
        if wrapper is not None:
            wrapped = native_predict(wrapper)
            entry["sklearn_wrapper"] = type(wrapper).__name__
            entry["sklearn_wrapper_max_abs_diff"] = float(np.max(np.abs(np.asarray(wrapped(x)) - expected)))
            calls["sklearn_wrapper_us"] = _no_arg(partial(wrapped, x))
        run, bound, out = ort_calls(source.export_dir / files["onnx"], x)
        calls.update(onnx_us=_no_arg(run), onnx_iobinding_us=_no_arg(bound))
        entry["onnx_max_abs_diff"] = float(np.max(np.abs(out - expected)))
        if "int8_onnx" in files:
            run, bound, out = ort_calls(source.export_dir / files["int8_onnx"], x)
            calls.update(int8_us=_no_arg(run), int8_iobinding_us=_no_arg(bound))
            entry["int8_max_abs_diff"] = float(np.max(np.abs(out - expected)))
        entry.update(time_interleaved(calls, [None], iterations, warmup))
        entry["speedup_onnx_p50"] = round(entry["native_us"]["p50"] / entry["onnx_iobinding_us"]["p50"], 1)
        if wrapper is not None:
            entry["speedup_onnx_vs_sklearn_wrapper_p50"] = round(
                entry["sklearn_wrapper_us"]["p50"] / entry["onnx_iobinding_us"]["p50"], 1)
        if "int8_onnx" in files:
            entry["speedup_int8_p50"] = round(entry["native_us"]["p50"] / entry["int8_iobinding_us"]["p50"], 1)
            entry["int8_vs_float_p50"] = round(entry["onnx_iobinding_us"]["p50"] / entry["int8_iobinding_us"]["p50"], 2)
        results.append(entry)
    return results


def _native_label(model: Any) -> str:
    kind = type(model).__name__
    return "lightgbm Booster (raw C API)" if kind == "Booster" else f"{type(model).__module__}.{kind}"


def _agreement(runtime: Any, native: NativeDecision, sessions: list[dict[str, Any]]) -> str:
    """Same decisions: the same greedy variant and the same bonus order on every session."""
    agree = 0
    for s in sessions:
        d = runtime.decide(s)
        assert d.cta_scores is not None
        best = runtime.variants[int(np.argmax(d.cta_scores))]
        native_scores = np.asarray(native.cta(native_features(native, s).cta_matrix(s["at"], native.cta_items)))
        agree += best == native.variants[int(np.argmax(native_scores))] and \
            list(d.bonus_order) == native.decide(s)[2]
    return f"{agree}/{len(sessions)}"


def compare_decisions(source: Source, bundle: Path, wrappers: dict[str, Any], sessions: list[dict[str, Any]],
                      iterations: int, warmup: int) -> dict[str, Any]:
    """The edge runtime against the same decision through the scikit-learn wrappers' predict (the issue's
    baseline; LightGBM decision models only) and through the models as MLflow logged them (for LightGBM the
    Booster, the raw C API: a stricter baseline; for scikit-learn families the fitted Pipeline)."""
    from edge.runtime import EdgeRuntime

    runtime = EdgeRuntime.load(bundle, seed=0)
    logged = {n: load_native(source.client, n, v)[0] for n, v in source.versions.items()}
    contenders: dict[str, Callable[[Any], object]] = {"edge": runtime.decide}
    natives: dict[str, dict[str, Any]] = {}
    if set(wrappers) == set(logged):
        natives["sklearn_wrapper"] = {"models": wrappers}
    natives["logged"] = {"models": logged}  # LightGBM: the Booster, the raw C API behind ~20 µs of Python
    for label, entry in natives.items():
        decision = NativeDecision(bundle, entry["models"]["cta"], entry["models"]["bonus-ranker"])
        entry.update(decision=decision, same_decisions=_agreement(runtime, decision, sessions),
                     predict={k: _native_label(m) for k, m in entry["models"].items()})
        contenders[label] = decision.decide
    timed = time_interleaved(contenders, sessions, iterations, warmup)
    edge = timed["edge"]
    health = runtime.health()
    result: dict[str, Any] = {
        "creator_id": runtime.creator_id, "variants": len(runtime.variants), "bonuses": len(runtime.bonuses),
        "models": {k: {"version": v["version"], "format": v["format"], "quantization": v["quantization"]}
                   for k, v in health["models"].items()},
        "sessions": len(sessions), "edge_runtime_us": edge,
    }
    for label, entry in natives.items():
        nat = timed[label]
        result[f"native_{label}"] = {
            "predict": entry["predict"], "same_decisions": entry["same_decisions"], "us": nat,
            "speedup_p50": round(nat["p50"] / edge["p50"], 1), "speedup_p99": round(nat["p99"] / edge["p99"], 1)}
    # The headline baseline: the scikit-learn wrappers when the decision models are LightGBM ones.
    baseline = next(iter(natives))
    headline = result[f"native_{baseline}"]
    result.update(native_baseline=baseline, same_decisions=headline["same_decisions"], native_us=headline["us"],
                  speedup_p50=headline["speedup_p50"], speedup_p99=headline["speedup_p99"])
    return result


def native_features(native: NativeDecision, s: dict[str, Any]) -> SessionFeatures:
    features = SessionFeatures(native.spec, creator_niche=native.niche, history=ViewerHistory(**s["history"]))
    for e in s["events"]:
        features.update(e)
    return features


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=("project", "tiny"), default="project")
    parser.add_argument("--iterations", type=int, default=5000, help="timed calls per figure")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=500, help="distinct sessions the decisions cycle through")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--quick", action="store_true", help="tiny world, 300 calls: checks the script works")
    parser.add_argument("--versions", default="", metavar="cta=N,bonus-ranker=M",
                        help="decide with these registered versions instead of the candidates")
    args = parser.parse_args(argv)
    if args.quick:
        args.source, args.iterations, args.warmup, args.sessions = "tiny", 300, 30, 40

    with tempfile.TemporaryDirectory(prefix="carryon-compare-") as tmp:
        work = Path(tmp)
        source = tiny_source(work) if args.source == "tiny" else project_source()
        for item in filter(None, args.versions.split(",")):
            name, _, version = item.partition("=")
            if name not in KINDS or not version.isdigit() or (name, int(version)) not in source.files:
                parser.error(f"--versions: {item!r} is not an exported version (name=N with name cta or bonus-ranker)")
            source.versions[name] = int(version)
        bundle = bundle_dir(source, work / "bundle")
        wrappers = {}
        for name, version in source.versions.items():
            booster, family = load_native(source.client, name, version)
            if family in ("lightgbm", "lambdarank"):
                log(f"{name} v{version}: refitting its scikit-learn wrapper ...")
                wrappers[name] = sklearn_wrapper(source, name, booster)
        models = compare_models(source, bundle, wrappers, args.iterations, args.warmup)
        log("whole edge decision ...")
        decision = compare_decisions(source, bundle, wrappers, make_sessions(args.sessions, args.seed),
                                     args.iterations, args.warmup)
    wrapped = decision.get("native_sklearn_wrapper")  # absent when a decision model is not a LightGBM one
    result = {
        "source": source.label,
        "settings": {"threads": 1, "iterations": args.iterations, "warmup": args.warmup, "seed": args.seed},
        "machine": {"python": platform.python_version(), "machine": platform.machine(),
                    "onnxruntime": ort.__version__, "numpy": np.__version__, "cores": os.cpu_count()},
        "models": models,
        "edge_decision": decision,
        "targets": {
            "edge_decision_p99_us_under_200": decision["edge_runtime_us"]["p99"] < 200.0,
            "edge_decision_5x_faster_than_sklearn_wrappers_p50": wrapped is not None and wrapped["speedup_p50"] >= 5.0,
            "edge_decision_5x_faster_than_sklearn_wrappers_p99": wrapped is not None and wrapped["speedup_p99"] >= 5.0,
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
