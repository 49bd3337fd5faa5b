"""Candidate model families, built deterministically from the training settings.

Every family takes the float32 feature matrix in spec order; categorical codes are
one-hot encoded inside the scikit-learn pipelines and passed to LightGBM as
categorical features, so the exported ONNX graph holds the preprocessing too.
"""

from __future__ import annotations

from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.spec import FeatureSpec
from models.config import TrainConfig


def categorical_indices(spec: FeatureSpec, names: tuple[str, ...]) -> list[int]:
    return [i for i, n in enumerate(names) if spec[n].dtype == "category"]


def _preprocess(spec: FeatureSpec, names: tuple[str, ...]) -> ColumnTransformer:
    cats = categorical_indices(spec, names)
    nums = [i for i in range(len(names)) if i not in cats]
    vocab = [np.arange(len(spec[names[i]].categories), dtype=np.float32) for i in cats]
    return ColumnTransformer(
        [
            ("onehot", OneHotEncoder(categories=vocab, handle_unknown="ignore", sparse_output=False), cats),
            ("scale", StandardScaler(), nums),
        ],
        sparse_threshold=0.0,
    )


def _lightgbm_params(config: TrainConfig) -> dict[str, Any]:
    lg = config.lightgbm
    return {
        "n_estimators": lg.n_estimators,
        "learning_rate": lg.learning_rate,
        "num_leaves": lg.num_leaves,
        "min_child_samples": lg.min_child_samples,
        "random_state": config.seed,
        # Bit-for-bit reproducible trees: fixed threads, row-wise histograms, deterministic mode.
        "deterministic": True,
        "force_row_wise": True,
        "n_jobs": 2,
        "verbose": -1,
    }


def make_classifier(family: str, spec: FeatureSpec, names: tuple[str, ...], config: TrainConfig) -> Any:
    """An unfitted click/convert (or claim) classifier of the given family."""
    if family in ("logreg", "pointwise"):
        return Pipeline([
            ("pre", _preprocess(spec, names)),
            ("clf", LogisticRegression(C=config.logreg_c, max_iter=1000)),
        ])
    if family == "mlp":
        m = config.mlp
        return Pipeline([
            ("pre", _preprocess(spec, names)),
            ("clf", MLPClassifier(hidden_layer_sizes=m.hidden, alpha=m.alpha, max_iter=m.max_iter,
                                  early_stopping=True, n_iter_no_change=8, random_state=config.seed)),
        ])
    if family == "lightgbm":
        return lgb.LGBMClassifier(objective="binary", **_lightgbm_params(config))
    raise ValueError(f"unknown classifier family {family!r}; expected logreg, lightgbm, mlp or pointwise")


def make_ranker(config: TrainConfig) -> lgb.LGBMRanker:
    return lgb.LGBMRanker(objective="lambdarank", **_lightgbm_params(config))


def fit_kwargs(model: Any, spec: FeatureSpec, names: tuple[str, ...]) -> dict[str, Any]:
    """Extra fit arguments: LightGBM learns categorical codes as categories."""
    if isinstance(model, lgb.LGBMModel):
        return {"categorical_feature": categorical_indices(spec, names)}
    return {}


class LightGBMFit(Protocol):
    """Fits an unfitted LightGBM model elsewhere (``models._dask_train``) and returns it fitted
    as the same plain local type, so evaluation, recording and export never see a difference."""

    def __call__(self, model: lgb.LGBMModel, x: np.ndarray, y: np.ndarray, *,
                 group: np.ndarray | None = None, **kwargs: Any) -> lgb.LGBMModel: ...


def fit_model(model: Any, x: np.ndarray, y: np.ndarray, spec: FeatureSpec, names: tuple[str, ...], *,
              group: np.ndarray | None = None, lightgbm_fit: LightGBMFit | None = None) -> Any:
    """Fit ``model`` here, or a LightGBM model through ``lightgbm_fit`` when one is given."""
    extra = fit_kwargs(model, spec, names)
    if group is not None:
        extra["group"] = group
    if lightgbm_fit is not None and isinstance(model, lgb.LGBMModel):
        return lightgbm_fit(model, x, y, **extra)
    return model.fit(x, y, **extra)


def family_params(family: str, config: TrainConfig) -> dict[str, Any]:
    """The hyper-parameters of a family, flat, for MLflow."""
    base: dict[str, Any] = {"family": family, "seed": config.seed, "test_fraction": config.test_fraction}
    if family in ("logreg", "pointwise"):
        return {**base, "C": config.logreg_c}
    if family == "mlp":
        return {**base, "hidden": "x".join(map(str, config.mlp.hidden)), "alpha": config.mlp.alpha,
                "max_iter": config.mlp.max_iter}
    lg = config.lightgbm
    return {**base, "n_estimators": lg.n_estimators, "early_stopping_rounds": lg.early_stopping_rounds,
            "validation_fraction": lg.validation_fraction, "learning_rate": lg.learning_rate,
            "num_leaves": lg.num_leaves, "min_child_samples": lg.min_child_samples}
