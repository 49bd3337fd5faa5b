"""Offline evaluation of a CTA policy from logged bandit data: IPS, SNIPS, DR, lift.

With importance weights w = pi(a|x) / mu(a|x) of the logged actions: IPS = mean(w r),
SNIPS = sum(w r) / sum(w), DR = mean(sum_a pi(a|x) q(x, a) + w (r - q(x, a_logged))),
lift = DR minus the logged policy's mean reward. Each is a ratio of cluster sums
``sum_c Y_c / sum_c D_c`` (clusters = sessions or drops, whose rows are correlated and
are resampled together).

Intervals: symmetric cluster bootstrap-t. Each resample's estimate is studentized by its
own cluster-robust (delta-method) standard error; the (1 - alpha) quantile of |t*|, times
the sample's standard error, gives value +- half-width, clipped to the range the value
can take (the observed reward range; its mirror for the lift). The lift's interval
comes from the same resamples (paired). Why this one: on the simulator (100 worlds,
tests/test_ope_coverage.py) and on heavy-weight synthetic logs (400 replications each),
percentile and normal intervals under-covered IPS with heavy weights (90-93 % at a
nominal 95 %), equal-tailed bootstrap-t and BCa over-corrected DR (91-94 %), and the
symmetric bootstrap-t held 93-99 % for IPS, SNIPS and DR alike. No interval is honest
when only a handful of clusters carry reward under the target policy's actions: check
``effective_sample_size`` and ``max_weight``.

    >>> result = evaluate_policy(rewards, actions, propensities, target_probs, predictions)
    >>> result.to_metrics()["policy_value_dr"]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_ROW_SUM_TOLERANCE = 1e-6
_MAX_CELLS = 4_000_000  # resamples x clusters per bootstrap chunk (bounds memory)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its (1 - alpha) confidence interval."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PolicyEvaluation:
    """Estimated value of a target policy, of the logged policy, and the DR lift between them."""

    ips: Estimate
    snips: Estimate
    dr: Estimate
    logged: Estimate  # the logged policy's observed mean reward
    lift_dr: Estimate  # dr minus logged, interval from paired resamples
    n: int  # rows
    n_clusters: int
    effective_sample_size: float  # (sum w)^2 / sum w^2 of the importance weights
    max_weight: float

    def to_metrics(self) -> dict[str, float]:
        """The MLflow metric names of the models issue, and nothing else."""
        out: dict[str, float] = {}
        for name, est in (("policy_value_ips", self.ips), ("policy_value_snips", self.snips),
                          ("policy_value_dr", self.dr), ("lift_dr", self.lift_dr)):
            out[name] = est.value
            out[f"{name}_ci_low"] = est.ci_low
            out[f"{name}_ci_high"] = est.ci_high
        out["ess"] = self.effective_sample_size
        out["max_weight"] = self.max_weight
        return out


def evaluate_policy(
    rewards: np.ndarray,
    actions: np.ndarray,
    logged_propensities: np.ndarray,
    target_probs: np.ndarray,
    reward_predictions: np.ndarray,
    *,
    clusters: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> PolicyEvaluation:
    """IPS, SNIPS and DR values of ``target_probs`` (n, K) on logged rows, with intervals.

    ``actions`` index the logged variant in each row's K columns, ``logged_propensities``
    are the logging policy's probabilities of those actions, ``reward_predictions`` (n, K)
    a reward model's prediction for every variant (finite everywhere; fill columns a row
    does not have with 0 and give them target probability 0). ``clusters`` (n,) groups
    correlated rows (session or drop ids); None treats every row as its own cluster.
    """
    r, a, mu, pi, q = _validate(rewards, actions, logged_propensities, target_probs, reward_predictions)
    n = r.shape[0]
    codes = _cluster_codes(clusters, n)
    n_clusters = int(codes.max()) + 1
    if n_clusters < 2:
        raise ValueError(f"clusters: need at least 2 distinct clusters to bootstrap, got {n_clusters}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 20:
        raise ValueError(f"n_bootstrap must be an integer >= 20, got {n_bootstrap!r}")
    if not (isinstance(alpha, float | int) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")

    rows = np.arange(n)
    w = pi[rows, a] / mu
    dr_terms = (pi * q).sum(axis=1) + w * (r - q[rows, a])
    per_row = {"n": np.ones(n), "w": w, "wr": w * r, "dr": dr_terms, "r": r, "lift": dr_terms - r}
    sums = {k: np.bincount(codes, weights=v, minlength=n_clusters) for k, v in per_row.items()}
    ratios = {  # estimate name -> (numerator, denominator) cluster sums
        "ips": ("wr", "n"), "snips": ("wr", "w"), "dr": ("dr", "n"), "logged": ("r", "n"), "lift": ("lift", "n"),
    }
    num = np.stack([sums[ratios[k][0]] for k in ratios])  # (E, C)
    den = np.stack([sums[ratios[k][1]] for k in ratios])
    r_lo, r_hi = float(r.min()), float(r.max())
    bounds = np.array([[r_lo, r_hi]] * 4 + [[r_lo - r_hi, r_hi - r_lo]])  # values, then the lift
    estimates = _bootstrap_t(num, den, bounds, int(n_bootstrap), float(alpha), np.random.default_rng(seed))
    by_name = dict(zip(ratios, estimates, strict=True))
    sum_w2 = float(np.dot(w, w))
    return PolicyEvaluation(
        ips=by_name["ips"], snips=by_name["snips"], dr=by_name["dr"], logged=by_name["logged"],
        lift_dr=by_name["lift"], n=n, n_clusters=n_clusters,
        effective_sample_size=float(w.sum()) ** 2 / sum_w2 if sum_w2 > 0 else 0.0,
        max_weight=float(w.max()),
    )


def _ratio_and_se(num: np.ndarray, den: np.ndarray, counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Ratio sum(k*Y)/sum(k*D) and its cluster-robust delta-method SE, per resample row of counts.

    ``num``/``den`` are (E, C); ``counts`` (B, C) resample multiplicities, or None for the
    sample itself. Returns arrays of shape (E, B) (B = 1 for the sample).
    """
    k = np.ones((1, num.shape[1])) if counts is None else counts
    c = num.shape[1]
    total_d = den @ k.T  # (E, B)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = (num @ k.T) / total_d
        # residual_c = Y_c - theta D_c; var = C/(C-1) * sum_c k_c residual_c^2 / (sum_c k_c D_c)^2
        sq = np.empty_like(theta)
        for e in range(num.shape[0]):
            resid = num[e][None, :] - theta[e][:, None] * den[e][None, :]  # (B, C)
            sq[e] = (k * resid * resid).sum(axis=1)
        se = np.sqrt(sq * (c / (c - 1))) / np.abs(total_d)
    return theta, se


def _bootstrap_t(
    num: np.ndarray, den: np.ndarray, bounds: np.ndarray, n_boot: int, alpha: float, rng: np.random.Generator,
) -> list[Estimate]:
    """Symmetric cluster bootstrap-t intervals of the E ratio estimates (rows of num/den).

    ``bounds`` (E, 2) is the range each estimand can take; intervals are clipped to it.
    """
    theta_hat, se_hat = (x[:, 0] for x in _ratio_and_se(num, den, None))
    c = num.shape[1]
    uniform = np.full(c, 1.0 / c)
    chunk = max(1, _MAX_CELLS // c)
    t_stats: list[np.ndarray] = []
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(c, uniform, size=min(chunk, n_boot - start)).astype(np.float64)
        theta, se_star = _ratio_and_se(num, den, counts)
        diff = np.abs(theta - theta_hat[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            # a resample whose clusters all agree (se 0) but moved the estimate: |t| = inf
            t = np.where(se_star > 0, diff / se_star, np.where(diff == 0, 0.0, np.inf))
        t_stats.append(t)
    t_all = np.concatenate(t_stats, axis=1)  # (E, B); NaN where a resample's ratio is undefined
    out: list[Estimate] = []
    for e in range(num.shape[0]):
        value, scale = float(theta_hat[e]), float(se_hat[e])
        t_e = t_all[e][~np.isnan(t_all[e])]
        if not np.isfinite(value) or t_e.size == 0:
            out.append(Estimate(value, float("nan"), float("nan")))
            continue
        # an order statistic, no interpolation (inf - inf would be NaN)
        half = float(np.quantile(t_e, 1.0 - alpha, method="inverted_cdf")) * scale if scale > 0 else 0.0
        low, high = (float(np.clip(x, bounds[e, 0], bounds[e, 1])) for x in (value - half, value + half))
        out.append(Estimate(value, low, high))
    return out


def _cluster_codes(clusters: np.ndarray | None, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    c = np.asarray(clusters)
    if c.shape != (n,):
        raise ValueError(f"clusters must have shape ({n},) like rewards, got {c.shape}")
    return np.unique(c, return_inverse=True)[1].reshape(-1)


def _validate(
    rewards: np.ndarray, actions: np.ndarray, propensities: np.ndarray, target: np.ndarray, predictions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r = _float_array("rewards", rewards, 1)
    n = r.shape[0]
    if n < 2:
        raise ValueError(f"rewards must hold at least 2 rows, got {n}")
    pi = _float_array("target_probs", target, 2)
    k = pi.shape[1]
    if pi.shape[0] != n or k < 1:
        raise ValueError(f"target_probs must have shape ({n}, K) with K >= 1, got {pi.shape}")
    q = _float_array("reward_predictions", predictions, 2)
    if q.shape != pi.shape:
        raise ValueError(f"reward_predictions must have shape {pi.shape} like target_probs, got {q.shape}")
    mu = _float_array("logged_propensities", propensities, 1)
    if mu.shape != (n,):
        raise ValueError(f"logged_propensities must have shape ({n},) like rewards, got {mu.shape}")
    bad = (mu <= 0) | (mu > 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"logged_propensities must be in (0, 1], got {float(mu[i])!r} at row {i}")
    if (pi < 0).any():
        raise ValueError(f"target_probs must be >= 0, got {float(pi.min())!r}")
    row_sums = pi.sum(axis=1)
    off = np.abs(row_sums - 1.0) > _ROW_SUM_TOLERANCE
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(f"target_probs rows must sum to 1, got {float(row_sums[i])!r} at row {i}")
    a_raw = np.asarray(actions)
    if a_raw.shape != (n,):
        raise ValueError(f"actions must have shape ({n},) like rewards, got {a_raw.shape}")
    if not np.issubdtype(a_raw.dtype, np.integer):
        raise ValueError(f"actions must be integer indices into the K={k} columns, got dtype {a_raw.dtype}")
    a = a_raw.astype(np.int64)
    out_of_range = (a < 0) | (a >= k)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise ValueError(f"actions must be in [0, {k}), got {a[i]} at row {i}")
    return r, a, mu, pi, q


def _float_array(name: str, value: np.ndarray, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {type(value).__name__}: {e}") from e
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {int((~np.isfinite(arr)).sum())} NaN or infinite value(s)")
    return arr
