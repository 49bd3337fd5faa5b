"""Building signed bundles: from the aliased versions, refusals, version counter, determinism, golden vectors.

The world (simulate -> ingest -> features -> train -> export, aliases set) is built once per test
process by ``bundle_world`` and shared with tests/test_verify.py.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export.bundle import BundleBuildError, SigningKey, build_bundle, generate_keys, resolve_signing_key
from export.bundle._golden import feature_range, golden_cases, synthetic_rows
from features.spec import FeatureSpec
from tests.world import World, run_data_stages, small_params

# Built "now" (to the hour) so that bundles stay within their 30-day expiry whenever the suite runs.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
CONSENT = {"snapshot_id": "snap01", "snapshot": "2026-10-11T20:35:44Z", "consented_viewers": 40,
           "excluded_viewers": 7}


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def resign_bundle(folder: Path, key: SigningKey, edit: Any = None) -> None:
    """Rewrite the manifest's hashes for the current files (after ``edit(manifest)``) and sign again with ``key``."""
    from export.bundle._sign import SIGNATURE, bundle_files, sign_dir

    manifest = json.loads((folder / "manifest.json").read_text())
    if edit is not None:
        edit(manifest)
    (folder / SIGNATURE).unlink()
    names = [n for n in bundle_files(folder) if n != "manifest.json"]
    manifest["files"] = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}
    for entry in manifest["models"].values():
        entry["sha256"], entry["ort_sha256"] = manifest["files"][entry["file"]], manifest["files"][entry["ort_file"]]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    sign_dir(folder, key.path, key.passphrase)


@dataclass(frozen=True)
class BundleWorld:
    world: World
    root: Path
    export_dir: Path
    tracking_uri: str
    key: SigningKey
    versions: dict[str, list[int]]  # registered model -> versions

    @property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)

    def build(self, out: Path, alias: str = "candidate", **overrides: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "alias": alias, "creator": None, "export_dir": self.export_dir, "features_dir": self.world.features,
            "out_dir": out, "key": self.key, "versions_file": out / "counter.json",
            "exploration": self.world.params.policy.exploration, "creator_caps": {}, "expires_days": 30.0,
            "golden_per_model": 4, "build_lineage": {"git_commit": "test", "params_sha256": "p"}, "consent": CONSENT,
            "now": NOW,
        }
        args.update(overrides)
        client = args.pop("client", self.client)
        return build_bundle(client, **args)


@functools.lru_cache(maxsize=1)
def bundle_world(root: Path) -> BundleWorld:
    """simulate -> ingest -> features -> train (one family per kind) -> export; aliases on the passing versions.

    Pytest may import this module under two names (tests.test_bundle from test_verify.py), so the
    finished world is also saved beside itself and reloaded rather than built twice.
    """
    import pickle

    saved = root / "bundle_world.pickle"
    if saved.is_file():
        loaded: BundleWorld = pickle.loads(saved.read_bytes())
        return loaded
    from export.stage import export_versions
    from models import _plots
    from models.bonus import train_bonus
    from models.cta import train_cta
    from pipeline.record import record_candidates
    from pipeline.tracking import open_tracking

    params = small_params(creators=2, drops=4, viewers=80)
    params = replace(params, train=replace(params.train, cta_families=("logreg",), bonus_families=("pointwise",)),
                     evaluation=replace(params.evaluation, n_bootstrap=20))
    world = run_data_stages(root / "world", params)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = open_tracking(root, {"MLFLOW_TRACKING_URI": uri})  # also points mlflow's globals there
    p = world.params
    candidates = train_cta(world.features, p.train, p.evaluation, p.policy.exploration)
    candidates += train_bonus(world.features, p.train, p.evaluation)
    recorded = record_candidates(client, candidates, {"git_commit": "test", "data_sha256": "d", "params_sha256": "p"})
    # The CTA model twice: v1 passes its gates, v2 (the same model) is tagged failed below.
    recorded += record_candidates(client, candidates[:1], {"git_commit": "test"})
    for c in candidates:
        _plots.close(c.figures)
    versions = [(r.name, r.version) for r in recorded]
    export_dir = root / "export"
    export_versions(client, versions, world.features, export_dir, p.train.test_fraction)
    client.set_model_version_tag("cta", "2", "carryon.gates", "failed")
    for name in ("cta", "bonus-ranker"):
        client.set_registered_model_alias(name, "candidate", "1")
        client.set_registered_model_alias(name, "champion", "1")
    generate_keys(root / "keys", "creator")
    key = resolve_signing_key(root / "keys" / "creator.pem", {}, None, root)
    by_name: dict[str, list[int]] = {}
    for name, version in versions:
        by_name.setdefault(name, []).append(version)
    made = BundleWorld(world, root, export_dir, uri, key, by_name)
    saved.write_bytes(pickle.dumps(made))
    return made


@pytest.fixture(scope="session")
def bw(tmp_path_factory: pytest.TempPathFactory) -> BundleWorld:
    return bundle_world(tmp_path_factory.getbasetemp() / "bundle-world")


@pytest.fixture(scope="session")
def built(bw: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return bw.build(tmp_path_factory.mktemp("built"))


pytestmark = pytest.mark.slow


def test_bundle_holds_the_contract_files_and_manifest(bw: BundleWorld, built: dict[str, Any]) -> None:
    folder = Path(built["dir"])
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == ["catalog.json", "feature_spec.json", "golden.json", "manifest.json", "model.sig",
                     "models/bonus-ranker.onnx", "models/bonus-ranker.ort", "models/cta.onnx", "models/cta.ort"]
    m = json.loads((folder / "manifest.json").read_text())
    assert m["schema"] == 1 and m["personalization"] is True and m["rehearsal"] is True
    assert m["signing"] == {"key_id": bw.key.key_id, "dev_key": False}
    assert m["created_at"] == _iso(NOW) and m["expires_at"] == _iso(NOW + timedelta(days=30))
    assert set(m["files"]) == set(names) - {"manifest.json", "model.sig"}
    cta = m["models"]["cta"]
    assert (cta["registered_model"], cta["version"], cta["input"], cta["output"]) == ("cta", 1, "features",
                                                                                        "probability")
    assert cta["opset"]["ai.onnx"] == 21 and cta["quantization"] == "none"
    assert cta["sha256"] == m["files"]["models/cta.onnx"]
    assert m["models"]["bonus-ranker"]["version"] == 1
    assert ["ai.onnx", "Sigmoid", 21] in m["required_operators"]
    assert m["min_onnxruntime"] == "1.20"
    assert m["feature_spec"]["hash"] == FeatureSpec.load(bw.world.features / "feature_spec.json").hash
    assert m["exploration"] == bw.world.params.policy.exploration.to_dict()
    assert "auc" in m["offline_metrics"]["cta"] and "ndcg_at_5" in m["offline_metrics"]["bonus-ranker"]
    assert not any(k.startswith(("gate_", "size_")) for k in m["offline_metrics"]["cta"])
    assert m["consent"] == {"snapshot": "snap01", "snapshot_time": "2026-10-11T20:35:44Z",
                            "counts": {"consented_viewers": 40, "excluded_viewers": 7}}
    assert m["lineage"]["git_commit"] == "test" and len(m["lineage"]["data_sha256"]) == 64
    assert m["lineage"]["models"]["cta"]["data_sha256"] == "d"
    raw = (folder / "manifest.json").read_text() + (folder / "catalog.json").read_text()
    assert str(bw.root) not in raw and "/tmp/" not in raw


def test_catalog_is_the_creators_own(bw: BundleWorld, built: dict[str, Any]) -> None:
    full = json.loads((bw.world.features / "catalog.json").read_text())
    first = full["creators"][0]
    catalog = json.loads((Path(built["dir"]) / "catalog.json").read_text())
    assert catalog["schema"] == 1 and catalog["creator_id"] == first["creator_id"] == built["creator_id"]
    assert catalog["variants"] == first["variants"] and catalog["bonuses"] == first["bonuses"]
    assert catalog["default_variant"] == first["default_variant"]
    assert catalog["default_bonus_order"] == first["default_bonus_order"]
    other = full["creators"][1]["creator_id"]
    assert other not in (Path(built["dir"]) / "catalog.json").read_text()


def test_golden_vectors_come_from_the_spec_and_catalog_and_pass_here(bw: BundleWorld, built: dict[str, Any]) -> None:
    from edge.golden import check_golden

    folder = Path(built["dir"])
    golden = json.loads((folder / "golden.json").read_text())
    assert golden["atol"] == 1e-5 and len(golden["cases"]) == 8  # 4 per model
    catalog = json.loads((folder / "catalog.json").read_text())
    variants = {tuple(v["features"]) for v in catalog["variants"]}
    spec = FeatureSpec.load(folder / "feature_spec.json")
    first = golden["cases"][0]
    assert first["model"] == "cta" and all(row[:18] == [f.default for f in spec.context] for row in first["inputs"])
    for case in (c for c in golden["cases"] if c["model"] == "cta"):
        assert all(tuple(row[18:]) in variants for row in case["inputs"])
        assert len(case["inputs"]) == len(case["expected"]) and len(case["inputs"][0]) == 21
    result = check_golden(folder)
    assert result["ok"] and result["checks"] == 16 and result["failed"] == 0


def test_champion_builds_reserve_monotonic_versions_and_rehearsals_do_not(bw: BundleWorld, tmp_path: Path) -> None:
    counter = tmp_path / "counter.json"
    rehearsal = bw.build(tmp_path / "out", versions_file=counter)
    assert rehearsal["bundle_version"] == 1 and rehearsal["rehearsal"] and not counter.exists()
    first = bw.build(tmp_path / "out", alias="champion", versions_file=counter)
    second = bw.build(tmp_path / "out", alias="champion", versions_file=counter)
    assert (first["bundle_version"], second["bundle_version"]) == (1, 2)
    assert json.loads(counter.read_text())["creators"] == {first["creator_id"]: 2}
    assert json.loads((Path(second["dir"]) / "manifest.json").read_text())["rehearsal"] is False
    assert bw.build(tmp_path / "out", versions_file=counter)["bundle_version"] == 3
    assert json.loads(counter.read_text())["creators"] == {first["creator_id"]: 2}


def test_tar_is_deterministic_flat_and_regular_files_only(bw: BundleWorld, built: dict[str, Any],
                                                          tmp_path: Path) -> None:
    from export.bundle._sign import pack_tar

    folder, tar_path = Path(built["dir"]), Path(built["tar"])
    again = tmp_path / "again.tar"
    os.utime(folder / "catalog.json", (1, 1))
    pack_tar(folder, again)
    assert again.read_bytes() == tar_path.read_bytes()
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert all(m.isreg() and m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 for m in members)
    assert {m.name for m in members} == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    with tarfile.open(fileobj=io.BytesIO(tar_path.read_bytes())) as tar:
        extracted = tar.extractfile("models/cta.onnx")
        assert extracted is not None and extracted.read() == (folder / "models/cta.onnx").read_bytes()


def test_a_missing_alias_is_refused(bw: BundleWorld, tmp_path: Path) -> None:
    client = bw.client
    client.delete_registered_model_alias("bonus-ranker", "champion")
    try:
        with pytest.raises(BundleBuildError, match=r"'bonus-ranker' has no version with alias 'champion'.*promote"):
            bw.build(tmp_path, alias="champion", versions_file=tmp_path / "c.json")
    finally:
        client.set_registered_model_alias("bonus-ranker", "champion", "1")
    assert not (tmp_path / "c.json").exists()  # nothing reserved
    assert not any(tmp_path.rglob("*.tar"))


def test_a_failed_gate_version_is_refused(bw: BundleWorld, tmp_path: Path) -> None:
    client = bw.client
    client.set_registered_model_alias("cta", "champion", "2")
    try:
        with pytest.raises(BundleBuildError, match=r"cta version 2 .*export gates failed"):
            bw.build(tmp_path, alias="champion")
    finally:
        client.set_registered_model_alias("cta", "champion", "1")


def test_a_deployed_file_that_differs_from_the_registry_is_refused(bw: BundleWorld, tmp_path: Path) -> None:
    import shutil

    export_copy = tmp_path / "export"
    shutil.copytree(bw.export_dir, export_copy)
    deployed = export_copy / "cta" / "v1" / "model.onnx"
    deployed.write_bytes(deployed.read_bytes() + b"\0")
    with pytest.raises(BundleBuildError, match=r"cta version 1: deployed file cta/v1/model.onnx has sha256"):
        bw.build(tmp_path / "out", export_dir=export_copy)
    deployed.unlink()
    with pytest.raises(BundleBuildError, match=r"cta version 1: no exported model in cta/v1/"):
        bw.build(tmp_path / "out", export_dir=export_copy)


def test_kill_switch_bundle_has_no_models_and_needs_no_registry(bw: BundleWorld, tmp_path: Path) -> None:
    from edge.golden import check_golden
    from edge.verify import verify_bundle

    result = bw.build(tmp_path, alias="champion", kill_switch=True, client=None)
    folder = Path(result["dir"])
    m = json.loads((folder / "manifest.json").read_text())
    assert m["personalization"] is False and m["models"] == {} and m["required_operators"] == []
    assert not (folder / "models").exists()
    assert verify_bundle(folder, {bw.key.key_id: bw.key.public_pem}, set())["personalization"] is False
    assert check_golden(folder) == {**check_golden(folder), "ok": True, "cases": 0}


def test_an_unknown_creator_is_refused(bw: BundleWorld, tmp_path: Path) -> None:
    with pytest.raises(BundleBuildError, match=r"creator 'nobody' is not in catalog.json"):
        bw.build(tmp_path, creator="nobody")


# --- the golden vector generator (property test) -----------------------------------------------------


def _spec() -> FeatureSpec:
    return FeatureSpec.build(["cooking", "fitness"], ["plain", "discount"], ["workbook", "live_qa"], 120.0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20))
def test_synthetic_rows_stay_within_the_spec(seed: int, n: int) -> None:
    spec = _spec()
    features = (*spec.context, *spec.cta_item, *spec.bonus_item)
    rows = synthetic_rows(features, n, np.random.default_rng(seed))
    assert rows.dtype == np.float32 and rows.shape == (n, len(features))
    assert not np.isnan(rows).any()
    for j, feature in enumerate(features):
        low, high, integer = feature_range(feature)
        column = rows[:, j].astype(np.float64)
        inside = (column >= low) & (column <= high)
        assert np.all(inside | (column == np.float32(feature.default))), feature.name
        if feature.dtype == "category":
            assert np.all(column == np.round(column)) and column.max() < len(feature.categories)
        if integer:
            assert np.all((column == np.round(column)) | (column == np.float32(feature.default)))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cases=st.integers(1, 5))
def test_golden_cases_are_seeded_and_use_catalog_items(seed: int, cases: int, tmp_path_factory: pytest.TempPathFactory
                                                       ) -> None:
    import onnx
    from onnx import TensorProto, helper

    spec = _spec()
    path = tmp_path_factory.getbasetemp() / "sum.onnx"
    if not path.exists():  # a stand-in model: the sum of the features
        graph = helper.make_graph(
            [helper.make_node("ReduceSum", ["features", "axes"], ["probability"], keepdims=0)], "sum",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 21])],
            [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N"])],
            [helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), path)
    items = np.array([[1.0, 0.5, 0.0], [2.0, 0.0, 1.0]], dtype=np.float32)
    made = golden_cases(spec, "cta", path, items, cases, seed)
    assert made == golden_cases(spec, "cta", path, items, cases, seed)
    assert len(made) == cases
    for case in made:
        x = np.asarray(case["inputs"], dtype=np.float32)
        assert {tuple(row[18:]) for row in x} <= {tuple(r) for r in items}
        assert np.allclose(case["expected"], x.astype(np.float64).sum(axis=1), atol=1e-3)


def test_cli_rehearsal_with_the_dev_key_then_verify_like_the_dvc_stage(bw: BundleWorld, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    (tmp_path / "ingest.json").write_text(json.dumps({"consent": CONSENT}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", bw.tracking_uri)
    for name in ("CARRYON_SIGNING_KEY", "CARRYON_SIGNING_KEY_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    params = str(Path(__file__).resolve().parents[1] / "params.yaml")
    runner = CliRunner()
    built = runner.invoke(app, ["bundle", "build", "--alias", "candidate", "--out", "data/bundle", "--export",
                                str(bw.export_dir), "--features", str(bw.world.features), "--ingest-report",
                                "ingest.json", "--params", params])
    assert built.exit_code == 0, built.output
    assert "version 1 (rehearsal, version not reserved)" in built.output
    assert "note: signed with a local development key (.carryon/keys/dev-signing.pem)" in built.output
    assert (tmp_path / ".carryon/keys/dev-signing.pub").is_file()
    assert not (tmp_path / ".carryon/bundle_versions.json").exists()
    manifest = json.loads(next((tmp_path / "data/bundle").glob("*/1/manifest.json")).read_text())
    assert manifest["signing"]["dev_key"] is True
    verified = runner.invoke(app, ["bundle", "verify", "data/bundle", "--params", params, "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["golden"]["ok"] is True
    missing = runner.invoke(app, ["bundle", "build", "--export", str(bw.export_dir), "--features",
                                  str(bw.world.features), "--ingest-report", "none.json", "--params", params])
    assert missing.exit_code == 1 and missing.output.startswith("carryon: error: none.json: cannot read the consent")
