"""Training: time split, candidates and their metrics, determinism, and refusals of bad data."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features.errors import DataError, InputUnreadableError
from models import _plots
from models._tables import load_catalog, load_cta, time_split
from models.bonus import train_bonus
from models.cta import train_cta, variant_inputs
from tests.world import World, run_data_stages, small_params

pytestmark = pytest.mark.slow

FAST = dict(cta_families=("logreg", "lightgbm"), bonus_families=("lambdarank",))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    params = small_params()
    params = replace(params, train=replace(params.train, **FAST),
                     evaluation=replace(params.evaluation, n_bootstrap=100))
    return run_data_stages(tmp_path_factory.mktemp("world"), params)


def _cta(world: World, features_dir: Path | None = None) -> list:
    p = world.params
    candidates = train_cta(features_dir or world.features, p.train, p.evaluation, p.policy.exploration)
    for c in candidates:
        _plots.close(c.figures)
    return candidates


def test_time_split_holds_out_latest_drops_whole(world: World) -> None:
    catalog = load_catalog(world.features)
    table = load_cta(world.features, catalog)
    test = time_split(table.creator, table.drop, table.ts, 0.2)
    assert 0 < test.sum() < test.size
    for creator in np.unique(table.creator):
        mine = table.creator == creator
        assert table.ts[mine & test].min() > table.ts[mine & ~test].max()
    straddling = set(table.session[test]) & set(table.session[~test])
    assert straddling == set()


def test_variant_inputs_score_every_variant_of_the_row_creator(world: World) -> None:
    catalog = load_catalog(world.features)
    table = load_cta(world.features, catalog)
    inputs, mask = variant_inputs(table, catalog)
    n_context = len(table.spec.context)
    rows = np.arange(table.y.size)
    shown = inputs[rows, table.action]
    np.testing.assert_array_equal(shown, table.x)  # the shown variant's row is the logged row
    assert mask.all()
    np.testing.assert_array_equal(inputs[:, 0, :n_context], inputs[:, -1, :n_context])


def test_cta_candidates_report_every_metric(world: World) -> None:
    candidates = _cta(world)
    assert [c.family for c in candidates] == ["logreg", "lightgbm"]
    expected = {"auc", "logloss", "ece", "lift_dr", "lift_dr_ci_low", "lift_dr_ci_high"} | {
        f"policy_value_{e}{s}" for e in ("ips", "snips", "dr") for s in ("", "_ci_low", "_ci_high")}
    for c in candidates:
        assert expected <= set(c.metrics)
        assert 0.0 <= c.metrics["auc"] <= 1.0
        assert c.metrics["lift_dr_ci_low"] <= c.metrics["lift_dr"] <= c.metrics["lift_dr_ci_high"]
        assert set(c.figures) == {"roc.png", "calibration.png", "lift.png"}
        assert c.input_example.shape == (5, len(c.feature_names))


def test_bonus_candidates_beat_or_report_popularity(world: World) -> None:
    p = world.params
    (ranker,) = train_bonus(world.features, p.train, p.evaluation)
    m = ranker.metrics
    assert {"ndcg_at_3", "ndcg_at_5", "map", "ndcg_at_5_gain", "ndcg_at_5_gain_ci_low"} <= set(m)
    assert 0 < m["ndcg_at_3"] <= 1 and 0 < m["ndcg_at_5"] <= 1 and 0 < m["map"] <= 1
    assert m["ndcg_at_5_gain"] == pytest.approx(m["ndcg_at_5"] - ranker.info["popularity_ndcg_at_5"], abs=1e-9)


def test_training_is_deterministic(world: World) -> None:
    first, second = _cta(world), _cta(world)
    catalog = load_catalog(world.features)
    x = load_cta(world.features, catalog).x
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.model.predict_proba(x), b.model.predict_proba(x))
        assert a.metrics == b.metrics


def _altered(world: World, tmp_path: Path, table: str, change) -> Path:
    out = tmp_path / "features"
    shutil.copytree(world.features, out)
    frame = pl.read_parquet(out / table)
    change(frame).write_parquet(out / table)
    return out


def test_missing_features_file_is_named(world: World, tmp_path: Path) -> None:
    out = tmp_path / "features"
    shutil.copytree(world.features, out)
    (out / "cta.parquet").unlink()
    with pytest.raises(InputUnreadableError, match=r"cta\.parquet: feature table is missing; run `carryon features`"):
        _cta(world, out)


def test_empty_training_set_is_refused(world: World, tmp_path: Path) -> None:
    out = _altered(world, tmp_path, "cta.parquet", lambda f: f.head(0))
    with pytest.raises(DataError, match="no CTA impressions; the training set is empty"):
        _cta(world, out)


def test_single_class_label_is_refused(world: World, tmp_path: Path) -> None:
    out = _altered(world, tmp_path, "cta.parquet", lambda f: f.with_columns(pl.lit(0, pl.Int8).alias("label")))
    with pytest.raises(DataError, match="single label class"):
        _cta(world, out)


def test_nan_features_are_refused(world: World, tmp_path: Path) -> None:
    out = _altered(world, tmp_path, "cta.parquet",
                   lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(float("nan"))
                                            .otherwise(pl.col("sess_chats")).cast(pl.Float32).alias("sess_chats")))
    with pytest.raises(DataError, match=r"NaN or infinite feature values \{'sess_chats': 1\}"):
        _cta(world, out)


def test_oversized_slate_is_refused(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import models._tables

    monkeypatch.setattr(models._tables, "LIGHTGBM_MAX_GROUP", 3)
    p = world.params
    with pytest.raises(DataError, match="above LightGBM's limit of 3 rows per group"):
        train_bonus(world.features, p.train, p.evaluation)
