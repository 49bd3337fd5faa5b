"""The export stage on real candidates: files, gates as MLflow tags, and select respecting them."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import export.stage
from export.stage import export_versions
from models import _plots
from models.bonus import train_bonus
from models.cta import train_cta
from pipeline.record import record_candidates
from pipeline.registry import SelectRule, gates_passed, list_versions, select_candidate
from pipeline.tracking import open_tracking
from tests.world import World, run_data_stages, small_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    params = small_params()
    params = replace(params, train=replace(params.train, cta_families=("logreg", "lightgbm"),
                                           bonus_families=("lambdarank",)),
                     evaluation=replace(params.evaluation, n_bootstrap=60))
    return run_data_stages(tmp_path_factory.mktemp("world"), params)


@pytest.fixture
def registered(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = open_tracking(tmp_path, os.environ)
    p = world.params
    candidates = train_cta(world.features, p.train, p.evaluation, p.policy.exploration)
    candidates += train_bonus(world.features, p.train, p.evaluation)
    recorded = record_candidates(client, candidates, {"git_commit": "test"})
    for c in candidates:
        _plots.close(c.figures)
    return client, [(r.name, r.version) for r in recorded]


def test_every_candidate_is_exported_gated_and_tagged(world: World, registered, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client, versions = registered
    out = tmp_path / "export"
    results = export_versions(client, versions, world.features, out, world.params.train.test_fraction)
    assert [(r.name, r.version) for r in results] == versions
    for r in results:
        assert r.passed, r.gates
        assert (out / r.files["onnx"]).is_file() and (out / r.files["ort"]).is_file()
        assert r.gates["float_vs_native_max_abs_diff"]["value"] <= 1e-5
        if r.family in ("lightgbm", "lambdarank"):
            assert r.gates["routing_flips"]["value"] == 0
        assert client.get_model_version(r.name, str(r.version)).tags["carryon.gates"] == "passed"
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert str(tmp_path).encode() not in data and b"/work/" not in data, path
    allow = json.loads((out / "allowlist.json").read_text())
    assert "TreeEnsemble" in allow["domains"]["ai.onnx.ml"]["operators"]


def test_a_broken_export_fails_its_gate_and_is_never_selected(world: World, registered, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    client, versions = registered
    cta_versions = [v for v in versions if v[0] == "cta"]
    real = export.stage._native_scores
    # The native side drifts by 1e-3: exactly what a wrong preprocessing constant in the graph looks like.
    monkeypatch.setattr(export.stage, "_native_scores", lambda model, x: real(model, x) + 1e-3)
    results = export_versions(client, cta_versions, world.features, tmp_path / "export",
                              world.params.train.test_fraction)
    assert all(not r.passed for r in results)
    assert all(not r.gates["float_vs_native_max_abs_diff"]["passed"] for r in results)
    rows = list_versions(client, "cta")
    assert {row.gates for row in rows} == {"failed"}
    with pytest.raises(Exception, match="gates = failed"):
        select_candidate(client, "cta", SelectRule("auc", {}, (gates_passed,)))
    assert np.isfinite(results[0].gates["float_vs_native_max_abs_diff"]["value"])
