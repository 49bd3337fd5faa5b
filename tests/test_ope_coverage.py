"""On simulated data the true policy value is known: the OPE intervals must cover it.

For 100 seeds: simulate a small world, run it through the real pipeline (simulate ->
ingest -> build_features), fit a reward model on the earlier drops, evaluate CTA
policies over it on the later drops, and compare with the simulator's exact value of
the policy on the same rows (``features.simulate.response.true_policy_value``, the
mean over rows of sum_a pi(a|x) p(x, a)). The DR and SNIPS 95% intervals must cover the
truth for at least 88 seeds of 100, and the estimates must fall when the policy gets worse.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from features.batch import build_features
from features.config import ConsentConfig, FeatureConfig, IngestConfig, SimulateConfig
from features.ingest import PseudonymKey, ingest
from features.policy import CtaPolicy, ExplorationSettings
from features.simulate import simulate
from features.simulate.response import click_prob_table, true_policy_value, variant_features
from features.spec import FeatureSpec
from models.ope import evaluate_policy

pytestmark = pytest.mark.slow

SEEDS = range(100)
MIN_COVERED = 88
# ~3000 impressions per world; the later half of the drops (~1500 rows) is evaluated.
WORLD = {"creators": 2, "drops_per_creator": 8, "viewers_per_drop": 80}
POLICIES = {  # the params.yaml default, and a softmax one
    "epsilon_greedy": ExplorationSettings("epsilon_greedy", epsilon=0.1, max_exploration=0.2),
    "softmax": ExplorationSettings("softmax", temperature=0.05, max_exploration=0.5),
}
KEY = PseudonymKey(bytes(range(32)), "env")  # a test key, not a secret


def _cta_table(seed: int, root: Path) -> tuple[pl.DataFrame, dict[str, Any], FeatureSpec]:
    """simulate -> ingest -> build_features on a tiny world; the CTA table, raw catalog and spec."""
    simulate(SimulateConfig(seed=seed, scale=1.0, start="2026-08-03T17:00:00Z", corrupt_fraction=0.0, **WORLD),
             root / "raw")
    ingest([root / "raw" / "events.parquet"], root / "clean", root / "raw" / "quarantine.jsonl",
           IngestConfig(partitions=2, pseudonym_key_file=None, min_ts="2020-01-01T00:00:00Z",
                        max_ts="2100-01-01T00:00:00Z", max_clock_skew_s=300, max_record_bytes=65536),
           ConsentConfig(snapshot="latest"), key=KEY)
    build_features(root / "clean", root / "raw" / "catalog.json", root / "features", FeatureConfig(label_window_s=120))
    catalog = json.loads((root / "raw" / "catalog.json").read_text(encoding="utf-8"))
    spec = FeatureSpec.load(root / "features" / "feature_spec.json")
    return pl.read_parquet(root / "features" / "cta.parquet"), catalog, spec


def _design(context: np.ndarray, style: np.ndarray, discount: np.ndarray, urgency: np.ndarray,
            scaler: StandardScaler) -> np.ndarray:
    """Scaled context, one-hot style, the variant's numbers and style x context interactions."""
    z = scaler.transform(context)
    onehot = np.eye(9)[style.astype(np.int64)][:, 1:]
    interactions = (onehot[:, :, None] * z[:, None, :]).reshape(len(z), -1)
    return np.column_stack([z, onehot, discount, urgency, interactions])


def _one_seed(seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cta, catalog, spec = _cta_table(seed, Path(tmp))
    context_names = list(spec.context_names)
    # Time-based split by drop: the later half of the drops is the test set.
    drops = cta.group_by("drop_id").agg(pl.col("ts").min()).sort("ts", "drop_id")["drop_id"].to_list()
    is_test = pl.col("drop_id").is_in(drops[len(drops) // 2:])
    train, test = cta.filter(~is_test), cta.filter(is_test)

    train_ctx = train.select(context_names).to_numpy().astype(np.float64)
    scaler = StandardScaler().fit(train_ctx)
    x_train = _design(train_ctx, *(train[c].to_numpy() for c in ("variant_style", "variant_discount",
                                                                  "variant_urgency")), scaler)
    model = LogisticRegression(C=0.3, max_iter=300).fit(x_train, train["label"].to_numpy())

    n = test.height
    creators = test["creator_id"].to_list()
    variants = variant_features(catalog, creators)  # (n, K) item features of each row's creator
    k = variants["variant_style"].shape[1]
    test_ctx = test.select(context_names).to_numpy().astype(np.float64)
    x_all = _design(np.repeat(test_ctx, k, axis=0), variants["variant_style"].ravel(),
                    variants["variant_discount"].ravel(), variants["variant_urgency"].ravel(), scaler)
    predictions = model.predict_proba(x_all)[:, 1].reshape(n, k)
    order = {c["creator_id"]: [v["variant"] for v in c["variants"]] for c in catalog["creators"]}
    actions = np.array([order[c].index(v) for c, v in zip(creators, test["variant"].to_list(), strict=True)])
    rows = {name: test[name].to_numpy() for name in context_names}
    logged = {"rewards": test["label"].to_numpy().astype(np.float64), "actions": actions,
              "logged_propensities": test["propensity"].to_numpy()}
    clusters = np.asarray(test["session_key"].to_list())

    def run(probs: np.ndarray) -> dict[str, Any]:
        ev = evaluate_policy(**logged, target_probs=probs, reward_predictions=predictions, clusters=clusters,
                             n_bootstrap=500, seed=seed)
        return {"truth": true_policy_value(rows, variants, probs),
                **{name: getattr(ev, name) for name in ("ips", "snips", "dr")}}

    out = {name: run(CtaPolicy(s).probabilities(predictions)) for name, s in POLICIES.items()}
    # Worse: the same exploration around the variant the true model likes least.
    true_p = click_prob_table(rows, variants)
    out["worse"] = run(CtaPolicy(POLICIES["epsilon_greedy"]).probabilities(-true_p))
    out["rows"] = n
    return out


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    workers = min(2, os.cpu_count() or 1)
    if workers == 1:
        return [_one_seed(s) for s in SEEDS]
    # spawn, not fork: polars' thread pool does not survive a fork
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_one_seed, SEEDS))


def _covered(results: list[dict[str, Any]], policy: str, estimator: str) -> int:
    return sum(r[policy][estimator].ci_low <= r[policy]["truth"] <= r[policy][estimator].ci_high for r in results)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("estimator", ["dr", "snips"])
def test_intervals_cover_the_true_value(results: list[dict[str, Any]], policy: str, estimator: str) -> None:
    covered = _covered(results, policy, estimator)
    print(f"{policy} {estimator}: 95% interval covers the truth in {covered}/{len(results)} seeds")
    assert covered >= MIN_COVERED, f"{estimator} covered the true value of {policy} in {covered}/{len(results)} seeds"


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
def test_estimates_fall_when_the_policy_gets_worse(results: list[dict[str, Any]], estimator: str) -> None:
    assert all(r["worse"]["truth"] < r["epsilon_greedy"]["truth"] for r in results)  # the premise
    fell = sum(r["worse"][estimator].value < r["epsilon_greedy"][estimator].value for r in results)
    assert fell >= 95, f"{estimator} fell in {fell}/{len(results)} seeds"
    good = np.mean([r["epsilon_greedy"][estimator].value for r in results])
    worse = np.mean([r["worse"][estimator].value for r in results])
    truth_gap = np.mean([r["epsilon_greedy"]["truth"] - r["worse"]["truth"] for r in results])
    assert good - worse == pytest.approx(truth_gap, rel=0.25)  # by about as much as the truth fell
