"""Right to erasure reaches the models: withdrawing one viewer's consent and rerunning
ingest, features and training gives the same model as data that never held that viewer."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.schema import us_to_iso
from features.simulate import simulate
from models._tables import load_catalog, load_cta
from models.cta import train_cta
from tests.world import run_data_stages, small_params

pytestmark = pytest.mark.slow


def _pick_viewer(events: pl.DataFrame) -> str:
    consent = events.filter(pl.col("type") == "consent", pl.col("purpose") == "personalization")
    withdrew = set(consent.filter(pl.col("action") == "withdraw").get_column("viewer_id").to_list())
    granted = set(consent.filter(pl.col("action") == "grant").get_column("viewer_id").to_list())
    busy = (events.filter(pl.col("type") == "cta_impression").group_by("viewer_id").len()
            .filter(pl.col("len") >= 3).sort("len", "viewer_id", descending=True).get_column("viewer_id").to_list())
    newest = events.sort("ts").get_column("viewer_id")[-1]
    return next(v for v in busy if v in granted and v not in withdrew and v != newest)


def test_withdrawn_viewer_leaves_no_trace_in_the_model(tmp_path: Path) -> None:
    params = small_params(creators=2, drops=4, viewers=120, seed=5)
    params = replace(params, train=replace(params.train, cta_families=("logreg", "lightgbm")),
                     evaluation=replace(params.evaluation, n_bootstrap=50))
    simulate(params.simulate, tmp_path / "sim")
    events = pl.read_parquet(tmp_path / "sim" / "events.parquet")
    viewer = _pick_viewer(events)
    snapshot = us_to_iso(int(events.get_column("ts").dt.epoch("us").max()))
    params = replace(params, consent=replace(params.consent, snapshot=snapshot))

    mine = events.filter(pl.col("viewer_id") == viewer).sort("ts")
    last = mine.row(-1, named=True)
    withdrawal = pl.DataFrame([{**{c: None for c in events.columns}, **{
        "event_id": "withdraw-test-1", "ts": last["ts"], "creator_id": last["creator_id"],
        "drop_id": last["drop_id"], "session_id": last["session_id"], "viewer_id": viewer,
        "type": "consent", "purpose": "personalization", "action": "withdraw"}}], schema=events.schema)
    with_withdrawal = pl.concat([events, withdrawal])
    without_viewer = events.filter(pl.col("viewer_id") != viewer)

    worlds = {}
    for name, frame in (("withdrawn", with_withdrawal), ("never", without_viewer)):
        root = tmp_path / name
        (root / "raw").mkdir(parents=True)
        shutil.copy(tmp_path / "sim" / "catalog.json", root / "raw" / "catalog.json")
        frame.write_parquet(root / "raw" / "events.parquet")
        worlds[name] = run_data_stages(root, params, events=root / "raw" / "events.parquet")

    tables = {n: pl.read_parquet(w.features / "cta.parquet") for n, w in worlds.items()}
    assert tables["withdrawn"].equals(tables["never"])
    assert tables["withdrawn"].height < events.filter(pl.col("type") == "cta_impression").height

    models = {n: train_cta(w.features, params.train, params.evaluation, params.policy.exploration)
              for n, w in worlds.items()}
    x = load_cta(worlds["never"].features, load_catalog(worlds["never"].features)).x
    for a, b in zip(models["withdrawn"], models["never"], strict=True):
        np.testing.assert_array_equal(a.model.predict_proba(x), b.model.predict_proba(x))
        assert a.metrics == b.metrics
    lgb_a, lgb_b = (m[1].model.booster_.model_to_string() for m in (models["withdrawn"], models["never"]))
    assert lgb_a == lgb_b
