"""The CTA exploration policy: which variant to show, and with what propensity.

Scores (one per variant, higher is better) become action probabilities by
epsilon-greedy or a softmax with a temperature; a per-creator cap then bounds the
probability of *not* showing the greedy variant. Every decision carries its
propensity, so the logs can evaluate other policies offline. numpy and the standard
library only: the edge runtime imports this module on the hot path.

    >>> policy = CtaPolicy(ExplorationSettings("epsilon_greedy", epsilon=0.1))
    >>> action, propensity = policy.decide(np.array([0.1, 0.3, 0.2]), 0.5)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

KINDS = ("epsilon_greedy", "softmax")
# Softmax weights (relative to the greedy variant's weight 1) never fall below this, so
# that float underflow cannot make an allowed variant unreachable: an exploring policy
# must give every allowed variant a positive propensity.
SOFTMAX_FLOOR = 1e-12


@dataclass(frozen=True)
class ExplorationSettings:
    """How a CTA policy explores. Validated at construction (ValueError naming the field)."""

    kind: str = "epsilon_greedy"  # "epsilon_greedy" or "softmax"
    epsilon: float = 0.1  # epsilon-greedy: share spread uniformly over the allowed variants, 0..1
    temperature: float = 1.0  # softmax: scores are divided by it, > 0
    max_exploration: float = 1.0  # cap on P(not the greedy variant), 0..1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("epsilon", "temperature", "max_exploration"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0.0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not 0.0 <= self.max_exploration <= 1.0:
            raise ValueError(f"max_exploration must be in [0, 1], got {self.max_exploration!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (the bundle manifest stores them)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExplorationSettings:
        """Settings from :meth:`to_dict` output; every field is required, no other is accepted."""
        if not isinstance(raw, dict):
            raise ValueError(f"exploration settings must be a mapping, got {type(raw).__name__}")
        fields = ("kind", "epsilon", "temperature", "max_exploration")
        missing = [f for f in fields if f not in raw]
        if missing:
            raise ValueError(f"exploration settings: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ValueError(f"exploration settings: unknown field(s) {', '.join(map(str, unknown))}")
        return cls(**{f: raw[f] for f in fields})


class CtaPolicy:
    """Turns variant scores into action probabilities and sampled decisions."""

    def __init__(self, settings: ExplorationSettings) -> None:
        self.settings = settings

    def probabilities(self, scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Action probabilities, shape (n, K), for scores of shape (n, K).

        ``mask`` (bool, (n, K)) marks the variants that exist for each row's creator;
        masked-out variants get probability 0. Ties in the greedy choice go to the
        lowest index. Rows sum to 1.
        """
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] == 0:
            raise ValueError(f"scores must have shape (n, K) with K >= 1, got shape {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError("scores must be finite, got NaN or infinite values")
        allowed = _check_mask(mask, s.shape)
        if not allowed.any(axis=1).all():
            raise ValueError("mask must allow at least one variant in every row")
        n, k = s.shape
        rows = np.arange(n)
        greedy = np.argmax(np.where(allowed, s, -np.inf), axis=1)
        st = self.settings
        if st.kind == "epsilon_greedy":
            count = allowed.sum(axis=1).astype(np.float64)
            p = np.where(allowed, (st.epsilon / count)[:, None], 0.0)
            p[rows, greedy] += 1.0 - st.epsilon
        else:
            top = s[rows, greedy][:, None]
            shifted = np.where(allowed, s, top) - top  # <= 0 where allowed; masked ones dropped below
            weights = np.maximum(np.exp(shifted / st.temperature), SOFTMAX_FLOOR)
            weights = np.where(allowed, weights, 0.0)
            total = np.zeros(n)
            for j in range(k):  # left to right, exactly as decide() sums
                total += weights[:, j]
            p = weights / total[:, None]
        cap = st.max_exploration
        explore = 1.0 - p[rows, greedy]
        over = explore > cap
        if over.any():
            shrink = cap / explore[over]
            p[over] *= shrink[:, None]
            p[rows[over], greedy[over]] = 1.0 - cap
        return p

    def decide(
        self, scores: np.ndarray, rng: np.random.Generator | float, mask: np.ndarray | None = None,
    ) -> tuple[int, float]:
        """One decision over K variant scores: (chosen index, its propensity).

        ``rng`` is a Generator or a uniform draw u in [0, 1). The propensity equals the
        chosen variant's entry of :meth:`probabilities` for the same row.
        """
        u = rng.random() if isinstance(rng, np.random.Generator) else float(rng)
        if not 0.0 <= u < 1.0:
            raise ValueError(f"u must be a uniform draw in [0, 1), got {u!r}")
        # float32 and float64 arrays hold their values exactly as Python floats: no float64 copy.
        arr = scores if type(scores) is np.ndarray and scores.dtype.char in "fd" else np.asarray(scores, np.float64)
        if arr.ndim != 1:
            raise ValueError(f"scores must have shape (K,), got shape {arr.shape}")
        values: list[float] = arr.tolist()
        k = len(values)
        if k == 0:
            raise ValueError("scores must hold at least one variant, got none")
        if not all(map(math.isfinite, values)):
            j = next(j for j, v in enumerate(values) if not math.isfinite(v))
            raise ValueError(f"scores must be finite, got {values[j]!r} at index {j}")
        if mask is None:  # the edge's call: every variant can be shown
            allowed: list[bool] = [True] * k
            best = max(values)
            greedy, count = values.index(best), k  # the first of equal best scores, as in probabilities()
        else:
            m = np.asarray(mask)
            if m.shape != (k,) or m.dtype != np.bool_:
                raise ValueError(f"mask must be boolean with the shape of scores ({k},), got {m.dtype} {m.shape}")
            allowed = m.tolist()
            greedy, best, count = -1, -math.inf, 0
            for j, (v, ok) in enumerate(zip(values, allowed, strict=True)):
                if ok:
                    count += 1
                    if v > best:
                        best, greedy = v, j
            if greedy < 0:
                raise ValueError("mask must allow at least one variant")
        st = self.settings
        if st.kind == "epsilon_greedy":
            base = st.epsilon / count
            p = [base if ok else 0.0 for ok in allowed]
            p[greedy] += 1.0 - st.epsilon
        else:
            shifted = np.array([v if ok else best for v, ok in zip(values, allowed, strict=True)]) - best
            w = np.maximum(np.exp(shifted / st.temperature), SOFTMAX_FLOOR).tolist()
            total = 0.0
            for j in range(k):
                if allowed[j]:
                    total += w[j]
                else:
                    w[j] = 0.0
            p = [x / total for x in w]
        explore = 1.0 - p[greedy]
        if explore > st.max_exploration:
            shrink = st.max_exploration / explore
            p = [x * shrink for x in p]
            p[greedy] = 1.0 - st.max_exploration
        cum = 0.0
        last = greedy
        for j, pj in enumerate(p):
            if pj > 0.0:
                cum += pj
                last = j
                if u < cum:
                    return j, pj
        return last, p[last]  # u beyond the rounded total: the last variant that can be shown


def _check_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask must have the shape of scores {shape}, got {m.shape}")
    if m.dtype != np.bool_:
        raise ValueError(f"mask must be boolean, got dtype {m.dtype}")
    return m
