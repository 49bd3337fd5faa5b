"""CTA candidates: click/convert models over (context, variant), judged on the latest drops.

Each candidate is also judged as a policy: it scores every variant of the row's creator,
the exploration policy turns the scores into action probabilities, and offline policy
evaluation (IPS, SNIPS, DR) estimates that policy's value and its lift over the logged one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from features.config import ProgressFn, no_progress
from features.errors import DataError
from features.policy import CtaPolicy, ExplorationSettings
from models import _plots
from models._tables import Catalog, CtaTable, load_catalog, load_cta, time_split
from models.candidates import LightGBMFit, family_params, make_classifier
from models.config import EvalConfig, TrainConfig
from models.metrics import classification_metrics
from models.ope import evaluate_policy
from models.result import Candidate
from models.rounds import fit_with_rounds
from models.synthetic import synthetic_rows


def variant_inputs(table: CtaTable, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs for every variant of each row's creator: (n, K, F) and a (n, K) mask."""
    n_context = len(table.spec.context)
    k_max = max(f.shape[0] for f in catalog.variant_features.values())
    inputs = np.zeros((len(table.y), k_max, table.x.shape[1]), dtype=np.float32)
    mask = np.zeros((len(table.y), k_max), dtype=bool)
    inputs[:, :, :n_context] = table.x[:, None, :n_context]
    for creator, items in catalog.variant_features.items():
        rows = np.flatnonzero(table.creator == creator)
        inputs[rows[:, None], np.arange(items.shape[0])[None, :], n_context:] = items[None, :, :]
        mask[rows, : items.shape[0]] = True
    return inputs, mask


def policy_probabilities(scores: np.ndarray, mask: np.ndarray, creators: np.ndarray,
                         settings: ExplorationSettings, creator_caps: dict[str, float]) -> np.ndarray:
    """Action probabilities of the exploration policy, with each creator's cap applied."""
    probs = np.zeros_like(scores)
    for creator in np.unique(creators):
        rows = creators == creator
        cap = min(settings.max_exploration, creator_caps.get(str(creator), 1.0))
        policy = CtaPolicy(replace(settings, max_exploration=cap))
        probs[rows] = policy.probabilities(scores[rows], mask[rows])
    return probs


def _check_labels(table: CtaTable, part: str) -> None:
    if table.y.size == 0:
        raise DataError(f"cta.parquet: the {part} set is empty; simulate or ingest more drops "
                        "(each creator needs at least two drops for a time-based split)")
    if np.unique(table.y).size < 2:
        raise DataError(f"cta.parquet: the {part} set has a single label class ({int(table.y[0])}); "
                        "a click model needs clicks and non-clicks — check the label window or the data")


def train_cta(
    features_dir: Path, config: TrainConfig, evaluation: EvalConfig, exploration: ExplorationSettings,
    creator_caps: dict[str, float] | None = None, *, progress: ProgressFn = no_progress,
    lightgbm_fit: LightGBMFit | None = None,
) -> list[Candidate]:
    """Fit every CTA family on the earlier drops and evaluate it on the latest ones
    (LightGBM through ``lightgbm_fit`` when given: the Dask engine)."""
    catalog = load_catalog(features_dir)
    table = load_cta(features_dir, catalog)
    is_test = time_split(table.creator, table.drop, table.ts, config.test_fraction)
    train, test = table.subset(~is_test), table.subset(is_test)
    _check_labels(train, "training")
    _check_labels(test, "test")
    validation = time_split(train.creator, train.drop, train.ts, config.lightgbm.validation_fraction)
    inputs, mask = variant_inputs(test, catalog)
    names = table.spec.cta_names
    logged_value = float(test.y.mean())
    info = {"train_rows": int(train.y.size), "test_rows": int(test.y.size),
            "test_drops": int(np.unique(test.drop).size), "train_label_rate": float(train.y.mean())}
    candidates = []
    for step, family in enumerate(config.cta_families):
        progress("train cta", step, len(config.cta_families))
        model = make_classifier(family, table.spec, names, config)
        model, rounds = fit_with_rounds(model, train.x, train.y, table.spec, names, config.lightgbm,
                                        validation=validation, lightgbm_fit=lightgbm_fit)
        prob = model.predict_proba(test.x)[:, 1]
        metrics = classification_metrics(test.y, prob, evaluation.ece_bins)
        scores = model.predict_proba(inputs.reshape(-1, len(names)))[:, 1].reshape(mask.shape)
        scores = np.where(mask, scores, 0.0)
        target = policy_probabilities(scores, mask, test.creator, exploration, creator_caps or {})
        ope = evaluate_policy(test.y.astype(np.float64), test.action, test.propensity, target, scores,
                              clusters=test.session, n_bootstrap=evaluation.n_bootstrap,
                              alpha=evaluation.alpha, seed=config.seed)
        metrics.update(ope.to_metrics())
        title = f"CTA {family}"
        figures = {
            "roc.png": _plots.roc(test.y, prob, f"{title}: ROC (AUC {metrics['auc']:.3f})"),
            "calibration.png": _plots.calibration(test.y.astype(float), prob, evaluation.ece_bins,
                                                  f"{title}: calibration"),
            "lift.png": _plots.estimates(
                {"IPS": (ope.ips.value, ope.ips.ci_low, ope.ips.ci_high),
                 "SNIPS": (ope.snips.value, ope.snips.ci_low, ope.snips.ci_high),
                 "DR": (ope.dr.value, ope.dr.ci_low, ope.dr.ci_high)},
                logged_value, f"{title}: policy value vs logged", "reward per impression"),
        }
        candidates.append(Candidate(
            kind="cta", family=family, model=model, feature_names=names, spec_hash=table.spec.hash,
            params={**family_params(family, config), **rounds, **exploration.to_dict()},
            metrics=metrics, input_example=synthetic_rows(table.spec, names, 5, config.seed),
            figures=figures, info=info,
        ))
    progress("train cta", len(config.cta_families), len(config.cta_families))
    return candidates
