"""CTA candidates and offline policy evaluation on an imported logged-bandit table.

The log (``features.bandit``: ``bandit.parquet`` + ``bandit_spec.json``) stands in for
the feature tables: its action list plays the variant catalog, and a model scores
(context, action) with the action one-hot, so it can score every action for the
policy and for doubly robust evaluation. The split is by time: the sessions that began
last form the test set, and no session straddles it. Rewards must be 0/1 for now
(click/convert models). Candidates are ``kind="cta"``; register them under
``REGISTERED_MODEL`` (``cta-log``), apart from ``cta``, whose inputs differ.

    >>> candidates = train_bandit_candidates(Path("data/bandit"), train, evaluation, exploration)
    >>> evaluate_on_log(Path("data/bandit"), "uniform", exploration, evaluation).to_metrics()
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import polars as pl

from features.bandit import LOG_FILE, SPEC_FILE, BanditSpec
from features.errors import DataError, InputUnreadableError
from features.policy import CtaPolicy, ExplorationSettings
from features.spec import FeatureSpec
from models import _plots
from models.candidates import family_params, fit_kwargs, make_classifier
from models.config import EvalConfig, TrainConfig
from models.metrics import classification_metrics
from models.ope import PolicyEvaluation, evaluate_policy
from models.result import Candidate
from models.rounds import fit_with_rounds

REGISTERED_MODEL: Final = "cta-log"  # registered model of candidates trained on an imported log
DR_REWARD_FAMILY: Final = "logreg"  # the reward model DR uses in evaluate_on_log
INPUT_EXAMPLE_ROWS: Final = 5


@dataclass(frozen=True)
class BanditLog:
    """The imported log as arrays; the model inputs are ``context`` then the one-hot action."""

    spec: BanditSpec
    context: np.ndarray  # (n, C) float32, spec.context_names order
    action: np.ndarray  # (n,) int64 index into spec.actions
    reward: np.ndarray  # (n,) float64
    propensity: np.ndarray  # (n,) float64, logged probability of the shown action
    session: np.ndarray  # (n,) pseudonymous session keys
    ts: np.ndarray  # (n,) µs since epoch
    source: str = LOG_FILE  # the file read, as the caller named it (for messages)

    def subset(self, rows: np.ndarray) -> BanditLog:
        return replace(self, context=self.context[rows], action=self.action[rows], reward=self.reward[rows],
                       propensity=self.propensity[rows], session=self.session[rows], ts=self.ts[rows])

    @property
    def x(self) -> np.ndarray:
        """Model inputs of the logged (context, shown action) pairs, (n, C + K) float32."""
        return design(self.context, self.action, len(self.spec.actions))


def design(context: np.ndarray, action: np.ndarray, k: int) -> np.ndarray:
    """Context columns followed by a one-hot block of ``k`` actions."""
    onehot = np.zeros((context.shape[0], k), dtype=np.float32)
    onehot[np.arange(context.shape[0]), action] = 1.0
    return np.ascontiguousarray(np.hstack([context.astype(np.float32, copy=False), onehot]))


def every_action(context: np.ndarray, k: int) -> np.ndarray:
    """Model inputs for each row with each action, (n * k, C + k): row i's action j at i * k + j."""
    n = context.shape[0]
    return design(np.repeat(context, k, axis=0), np.tile(np.arange(k), n), k)


def load_bandit_log(bandit_dir: Path) -> BanditLog:
    """Read an imported log; refuse a missing, altered or empty one clearly."""
    spec = BanditSpec.load(bandit_dir / SPEC_FILE)
    path = bandit_dir / LOG_FILE
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise InputUnreadableError(f"{path}: cannot read the imported log ({e}); import the log again") from e
    needed = ["session_key", "ts", "action_index", "reward", "propensity", *spec.context_names]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} missing; it does not match {SPEC_FILE}: import the log again")
    if frame.height == 0:
        raise DataError(f"{path}: no rows (every row was quarantined or excluded); check the import report")
    frame = frame.sort("ts", "session_key", maintain_order=True)
    context = frame.select(spec.context_names).to_numpy().astype(np.float32).reshape(frame.height, -1)
    action = frame.get_column("action_index").to_numpy()
    numbers = {"context": context, "reward": frame.get_column("reward").to_numpy(),
               "propensity": frame.get_column("propensity").to_numpy()}
    for name, values in numbers.items():
        if values.dtype.kind != "f" or not np.isfinite(values).all():
            raise DataError(f"{path}: {name} holds NaN, infinite or null values; the import writes none, so the "
                            "file was altered: import the log again")
    if action.dtype.kind not in "iu" or (action < 0).any() or (action >= len(spec.actions)).any():
        raise DataError(f"{path}: action_index outside the spec's {len(spec.actions)} actions; import the log again")
    return BanditLog(spec, np.ascontiguousarray(context), action.astype(np.int64),
                     numbers["reward"].astype(np.float64), numbers["propensity"].astype(np.float64),
                     frame.get_column("session_key").to_numpy().astype(str),
                     frame.get_column("ts").dt.epoch("us").to_numpy(), str(path))


def session_split(session: np.ndarray, ts: np.ndarray, test_fraction: float, source: str = LOG_FILE) -> np.ndarray:
    """Boolean test mask: the sessions that began last, about ``test_fraction`` of the rows, whole."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    starts = (pl.DataFrame({"s": session, "ts": ts}).group_by("s")
              .agg(pl.col("ts").min().alias("start"), pl.len().alias("n")).sort("start", "s"))
    if starts.height < 2:
        raise DataError(f"{source}: the log holds {starts.height} session(s); a time-based split needs at least 2")
    from_end = np.cumsum(starts.get_column("n").to_numpy()[::-1])
    k = int(np.searchsorted(from_end, test_fraction * session.size)) + 1
    k = min(max(k, 1), starts.height - 1)
    return np.isin(session, starts.get_column("s").to_numpy()[-k:])


def model_spec(spec: BanditSpec) -> FeatureSpec:
    """The log's inputs as a FeatureSpec, so the candidate families build as for ``cta``."""
    return FeatureSpec(context=spec.model_features(), cta_item=(), bonus_item=(), label_window_s=0.0)


def _check_rewards(log: BanditLog) -> None:
    other = ~np.isin(log.reward, (0.0, 1.0))
    if other.any():
        example = float(log.reward[other][0])
        raise DataError(f"{log.source}: {int(other.sum())} reward(s) are not 0 or 1 (e.g. {example:g}); "
                        "CTA models on logs are click/convert models for now: log a 0/1 reward")


def _check_labels(part: BanditLog, name: str) -> None:
    if np.unique(part.reward).size < 2:
        raise DataError(f"{part.source}: the {name} part of the log has a single reward value "
                        f"({part.reward[0]:g}); a click model needs both 0 and 1 rewards there")


def _split(log: BanditLog, config: TrainConfig) -> tuple[BanditLog, BanditLog]:
    _check_rewards(log)
    is_test = session_split(log.session, log.ts, config.test_fraction, log.source)
    train, test = log.subset(~is_test), log.subset(is_test)
    _check_labels(train, "training")
    _check_labels(test, "test")
    return train, test


def _validation_rows(train: BanditLog, config: TrainConfig) -> np.ndarray:
    """The training sessions that began last, where a LightGBM candidate's rounds are chosen."""
    if np.unique(train.session).size < 2:
        return np.zeros(train.reward.size, dtype=bool)  # models.rounds then fits n_estimators and says why
    return session_split(train.session, train.ts, config.lightgbm.validation_fraction, train.source)


def action_scores(model: Any, context: np.ndarray, k: int) -> np.ndarray:
    """The model's reward probability of every action for every row, (n, k)."""
    return np.asarray(model.predict_proba(every_action(context, k))[:, 1], dtype=np.float64).reshape(-1, k)


def train_bandit_candidates(bandit_dir: Path, config: TrainConfig, evaluation: EvalConfig,
                            exploration: ExplorationSettings) -> list[Candidate]:
    """Fit every CTA family on the earlier sessions of the log and judge it on the latest ones."""
    log = load_bandit_log(bandit_dir)
    train, test = _split(log, config)
    spec, k = log.spec, len(log.spec.actions)
    features, names = model_spec(spec), spec.feature_names
    x_train, x_test = train.x, test.x
    info = {"train_rows": int(train.reward.size), "test_rows": int(test.reward.size),
            "test_sessions": int(np.unique(test.session).size), "train_label_rate": float(train.reward.mean()),
            "log_spec_hash": spec.hash, "log_source": str(spec.lineage.get("source")),
            "log_source_sha256": str(spec.lineage.get("source_sha256")), "consent": spec.consent.describe()}
    example = synthetic_inputs(spec, x_train, INPUT_EXAMPLE_ROWS, config.seed)
    validation = _validation_rows(train, config)
    candidates = []
    for family in config.cta_families:
        model = make_classifier(family, features, names, config)
        model, rounds = fit_with_rounds(model, x_train, train.reward.astype(np.int64), features, names,
                                        config.lightgbm, validation=validation)
        prob = model.predict_proba(x_test)[:, 1]
        metrics = classification_metrics(test.reward, prob, evaluation.ece_bins)
        scores = action_scores(model, test.context, k)
        ope = evaluate_policy(test.reward, test.action, test.propensity, CtaPolicy(exploration).probabilities(scores),
                              scores, clusters=test.session, n_bootstrap=evaluation.n_bootstrap,
                              alpha=evaluation.alpha, seed=config.seed)
        metrics.update(ope.to_metrics())
        title = f"CTA on log, {family}"
        figures = {
            "roc.png": _plots.roc(test.reward, prob, f"{title}: ROC (AUC {metrics['auc']:.3f})"),
            "calibration.png": _plots.calibration(test.reward, prob, evaluation.ece_bins, f"{title}: calibration"),
            "lift.png": _plots.estimates(
                {"IPS": (ope.ips.value, ope.ips.ci_low, ope.ips.ci_high),
                 "SNIPS": (ope.snips.value, ope.snips.ci_low, ope.snips.ci_high),
                 "DR": (ope.dr.value, ope.dr.ci_low, ope.dr.ci_high)},
                ope.logged.value, f"{title}: policy value vs logged", "reward per impression"),
        }
        candidates.append(Candidate(
            kind="cta", family=family, model=model, feature_names=names, spec_hash=spec.hash,
            params={**family_params(family, config), **rounds, **exploration.to_dict(), "source": "log"},
            metrics=metrics, input_example=example, figures=figures, info=info,
        ))
    return candidates


def synthetic_inputs(spec: BanditSpec, x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` made-up model inputs: codes within each vocabulary, numbers drawn from a normal with each
    column's mean and spread (2 decimals), one random action each. Never a row of the log."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, len(spec.feature_names)), dtype=np.float32)
    for j, feature in enumerate(spec.context):
        if feature.dtype == "category":
            out[:, j] = rng.integers(0, len(feature.categories), size=n)
            continue
        column = x[:, j].astype(np.float64)
        out[:, j] = rng.normal(column.mean(), column.std() or 1.0, size=n).round(2)
    c, k = len(spec.context), len(spec.actions)
    out[np.arange(n), c + rng.integers(0, k, size=n)] = 1.0
    return out


def evaluate_on_log(
    bandit_dir: Path, policy: Literal["uniform"] | Any, exploration: ExplorationSettings, evaluation: EvalConfig,
    *, config: TrainConfig | None = None,
) -> PolicyEvaluation:
    """IPS, SNIPS and DR values (with intervals) of ``policy`` on the test part of the log.

    ``policy`` is ``"uniform"`` (every action alike) or a fitted model over the log's
    inputs (``predict_proba``), turned into a policy by ``exploration``. DR's reward
    model (``DR_REWARD_FAMILY``) is fitted on the training part; ``config`` gives the
    split and the seed (default: ``TrainConfig()``).
    """
    config = config or TrainConfig()
    log = load_bandit_log(bandit_dir)
    train, test = _split(log, config)
    spec, k = log.spec, len(log.spec.actions)
    features, names = model_spec(spec), spec.feature_names
    reward_model = make_classifier(DR_REWARD_FAMILY, features, names, config)
    reward_model.fit(train.x, train.reward.astype(np.int64), **fit_kwargs(reward_model, features, names))
    q = action_scores(reward_model, test.context, k)
    if isinstance(policy, str):
        if policy != "uniform":
            raise ValueError(f"policy must be 'uniform' or a fitted model, got {policy!r}; load a registered "
                             "version with load_policy_model('models:/NAME/VERSION', bandit_dir)")
        target = np.full((test.reward.size, k), 1.0 / k)
    else:
        check_feature_count(policy, spec, "the policy model")
        target = CtaPolicy(exploration).probabilities(action_scores(policy, test.context, k))
    return evaluate_policy(test.reward, test.action, test.propensity, target, q, clusters=test.session,
                           n_bootstrap=evaluation.n_bootstrap, alpha=evaluation.alpha, seed=config.seed)


def check_feature_count(model: Any, spec: BanditSpec, what: str) -> None:
    """Refuse a model whose input width differs from the log's (context columns + actions)."""
    if not hasattr(model, "predict_proba"):
        raise DataError(f"{what} has no predict_proba; it must output the probability of reward 1 per row")
    got = getattr(model, "n_features_in_", None)
    expected = len(spec.feature_names)
    if got is not None and int(got) != expected:
        raise DataError(
            f"{what} takes {int(got)} inputs, but this log has {expected} ({len(spec.context)} context columns + "
            f"{len(spec.actions)} actions); evaluate it on a log imported with the spec it was trained with "
            "(reuse_spec / --reuse-spec), or train on this log")


class ProbabilityScorer:
    """``predict_proba`` over a model whose ``predict`` gives P(reward = 1) per row (a LightGBM
    binary Booster, a generic MLflow pyfunc model)."""

    def __init__(self, model: Any, n_features: int | None) -> None:
        self.model = model
        if n_features is not None:
            self.n_features_in_ = n_features

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model.predict(x), dtype=np.float64)
        p = out[:, -1] if out.ndim == 2 else out.reshape(-1)
        if p.shape[0] != x.shape[0] or not ((p >= 0) & (p <= 1)).all():
            raise DataError("the model does not output one probability in [0, 1] per row; a policy model must be "
                            "a click/convert classifier")
        return np.column_stack([1.0 - p, p])


def _booster_scorer(booster: Any, uri: str) -> ProbabilityScorer:
    objective = str(booster.params.get("objective", "unknown"))
    if objective not in ("binary", "cross_entropy", "xentropy"):
        raise DataError(f"model {uri} is a LightGBM {objective!r} model, not a click/convert classifier "
                        "(objective 'binary'); pick a CTA model version")
    return ProbabilityScorer(booster, int(booster.num_feature()))


def load_policy_model(uri: str, bandit_dir: Path) -> Any:
    """Load a model (``models:/NAME/VERSION``, ``runs:/...``, a path) and check it fits this log's inputs.

    The tracking store must already be configured (``pipeline.tracking.open_tracking``).
    Uses the LightGBM or scikit-learn flavor when the model has it, else pyfunc; a LightGBM
    Booster or a pyfunc model is wrapped in :class:`ProbabilityScorer`.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    spec = BanditSpec.load(bandit_dir / SPEC_FILE)
    try:
        info = mlflow.models.get_model_info(uri)
        if "lightgbm" in info.flavors:
            model: Any = mlflow.lightgbm.load_model(uri)
        elif "sklearn" in info.flavors:
            model = mlflow.sklearn.load_model(uri)
        else:
            model = ProbabilityScorer(mlflow.pyfunc.load_model(uri), _signature_width(info))
    except (MlflowException, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputUnreadableError(f"{uri}: cannot load the model ({first}); check the name and version with "
                                   "`carryon models list`") from e
    if not hasattr(model, "predict_proba") and hasattr(model, "num_feature"):  # a LightGBM Booster
        model = _booster_scorer(model, uri)
    check_feature_count(model, spec, f"model {uri}")
    trained = _trained_spec_hash(info.run_id)
    if trained is not None and trained != spec.hash:
        raise DataError(f"model {uri} was trained on inputs with spec hash {trained[:12]}…, this log's spec is "
                        f"{spec.hash[:12]}…; import the log with the model's spec (reuse_spec / --reuse-spec) "
                        "or train on this log")
    return model


def _signature_width(info: Any) -> int | None:
    signature = getattr(info, "signature", None)
    inputs = getattr(signature, "inputs", None)
    shapes = [getattr(s, "shape", None) for s in getattr(inputs, "inputs", [])]
    if len(shapes) == 1 and shapes[0] is not None and len(shapes[0]) == 2 and shapes[0][1] > 0:
        return int(shapes[0][1])
    return None


def _trained_spec_hash(run_id: str | None) -> str | None:
    """The spec hash the run recorded with its model (``feature_names.json``), if it did."""
    if not run_id:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        recorded = mlflow.artifacts.load_dict(f"runs:/{run_id}/feature_names.json")
    except (MlflowException, OSError, ValueError):
        return None
    value = recorded.get("spec_hash") if isinstance(recorded, dict) else None
    return str(value) if value else None
