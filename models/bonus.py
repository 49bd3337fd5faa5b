"""Bonus-ranking candidates: learning to rank over (context, bonus) slates.

Judged on the latest drops by NDCG@3, NDCG@5 and MAP, and by the NDCG@5 gain over the
reference line: ranking each creator's bonuses by their claim rate in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.config import ProgressFn, no_progress
from features.errors import DataError
from models import _plots
from models._tables import BonusTable, load_bonus, time_split
from models.candidates import LightGBMFit, family_params, make_classifier, make_ranker
from models.config import EvalConfig, TrainConfig
from models.metrics import Slates, cluster_bootstrap_mean, per_slate_ndcg, ranking_metrics
from models.result import Candidate
from models.rounds import fit_with_rounds
from models.synthetic import synthetic_rows

# Claims of a bonus are shrunk toward the creator's overall claim rate with this many
# pseudo-impressions, so a rarely shown bonus does not top the reference ranking by luck.
_POPULARITY_PRIOR = 20.0


def popularity_scores(train: BonusTable, test: BonusTable) -> np.ndarray:
    """The reference line: each (creator, bonus)'s smoothed claim rate in training."""
    frame = pl.DataFrame({"creator": train.creator, "bonus": train.bonus,
                          "claimed": (train.relevance > 0).astype(np.float64)})
    base = frame.group_by("creator").agg(pl.col("claimed").mean().alias("base"))
    rates = (frame.group_by("creator", "bonus").agg(pl.col("claimed").sum().alias("k"), pl.len().alias("n"))
             .join(base, on="creator")
             .with_columns(((pl.col("k") + _POPULARITY_PRIOR * pl.col("base"))
                            / (pl.col("n") + _POPULARITY_PRIOR)).alias("rate")))
    looked_up = (pl.DataFrame({"creator": test.creator, "bonus": test.bonus})
                 .join(rates.select("creator", "bonus", "rate"), on=["creator", "bonus"], how="left",
                       maintain_order="left"))
    return looked_up.get_column("rate").fill_null(0.0).to_numpy()


def _fit(family: str, train: BonusTable, config: TrainConfig,
         lightgbm_fit: LightGBMFit | None) -> tuple[Any, dict[str, object]]:
    names = train.spec.bonus_names
    if family == "lambdarank":
        validation = time_split(train.creator, train.drop, train.ts, config.lightgbm.validation_fraction)
        return fit_with_rounds(make_ranker(config), train.x, train.relevance, train.spec, names, config.lightgbm,
                               validation=validation, group_ids=train.slate, lightgbm_fit=lightgbm_fit)
    if family == "pointwise":
        model = make_classifier("pointwise", train.spec, names, config)
        model.fit(train.x, (train.relevance > 0).astype(np.int8))
        return model, {}
    raise ValueError(f"unknown bonus family {family!r}; expected lambdarank or pointwise")


def _scores(model: Any, x: np.ndarray) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
    return np.asarray(model.predict(x), dtype=np.float64)


def train_bonus(features_dir: Path, config: TrainConfig, evaluation: EvalConfig, *,
                progress: ProgressFn = no_progress, lightgbm_fit: LightGBMFit | None = None) -> list[Candidate]:
    """Fit every bonus-ranking family on the earlier drops and evaluate it on the latest ones
    (LightGBM through ``lightgbm_fit`` when given: the Dask engine)."""
    table = load_bonus(features_dir)
    is_test = time_split(table.creator, table.drop, table.ts, config.test_fraction)
    train, test = table.subset(~is_test), table.subset(is_test)
    for part, data in (("training", train), ("test", test)):
        if data.relevance.size == 0 or not (data.relevance > 0).any():
            raise DataError(f"bonus.parquet: the {part} set has no claimed bonus; a ranker needs "
                            "relevant items — simulate or ingest more drops")
    slates = Slates.from_group_ids(test.slate)
    slate_session = test.session[slates.starts[:-1]]
    reference = popularity_scores(train, test)
    reference_ndcg5 = per_slate_ndcg(test.relevance, reference, slates, 5)
    reference_curve = [float(np.nanmean(per_slate_ndcg(test.relevance, reference, slates, k))) for k in range(1, 6)]
    names = table.spec.bonus_names
    info = {"train_rows": int(train.relevance.size), "test_rows": int(test.relevance.size),
            "test_slates": len(slates), **{f"popularity_{k}": v for k, v in
                                           ranking_metrics(test.relevance, reference, slates).items()}}
    candidates = []
    for step, family in enumerate(config.bonus_families):
        progress("train bonus", step, len(config.bonus_families))
        model, rounds = _fit(family, train, config, lightgbm_fit)
        scores = _scores(model, test.x)
        metrics = ranking_metrics(test.relevance, scores, slates)
        gain = per_slate_ndcg(test.relevance, scores, slates, 5) - reference_ndcg5
        scored = ~np.isnan(gain)
        value, low, high = cluster_bootstrap_mean(gain[scored], slate_session[scored], evaluation.n_bootstrap,
                                                  evaluation.alpha, config.seed)
        metrics.update(ndcg_at_5_gain=value, ndcg_at_5_gain_ci_low=low, ndcg_at_5_gain_ci_high=high)
        curve = [float(np.nanmean(per_slate_ndcg(test.relevance, scores, slates, k))) for k in range(1, 6)]
        figures = {
            "ndcg_by_k.png": _plots.ndcg_by_k({family: curve, "popularity": reference_curve},
                                              f"Bonus ranking {family}: NDCG by k"),
            "lift.png": _plots.estimates({"NDCG@5 gain": (value, low, high)}, 0.0,
                                         f"Bonus ranking {family}: gain over popularity", "NDCG@5 difference"),
        }
        candidates.append(Candidate(
            kind="bonus-ranker", family=family, model=model, feature_names=names, spec_hash=table.spec.hash,
            params={**family_params(family, config), **rounds}, metrics=metrics,
            input_example=synthetic_rows(table.spec, names, 5, config.seed), figures=figures, info=info,
        ))
    progress("train bonus", len(config.bonus_families), len(config.bonus_families))
    return candidates
