"""Training benchmark: every candidate of both kinds on the pipeline's feature tables, and
LightGBM alone on a synthetic 1M x 30 table.

    python benchmarks/training.py --features data/features [--rows 1000000] [--cols 30]

Run it after `dvc repro` (which writes data/features). Prints one JSON document: seconds
per candidate and in total, LightGBM seconds, and each figure against the models issue's
targets (all candidates under 60 s; LightGBM on 1M x 30 under 15 s). The native baseline
here is the training itself: there is nothing faster to compare with in the same run, so
the ratios are against the targets. Fixed seed; candidate logging to MLflow is excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import TrainConfig


def _candidates(features: Path) -> dict[str, float]:
    from models.bonus import train_bonus
    from models.cta import train_cta
    from pipeline.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for family in params.train.cta_families:
        t = time.perf_counter()
        config = TrainConfig(**{**params.train.__dict__, "cta_families": (family,)})
        train_cta(features, config, params.evaluation, params.policy.exploration, params.policy.creator_caps)
        timings[f"cta_{family}"] = time.perf_counter() - t
    for family in params.train.bonus_families:
        t = time.perf_counter()
        config = TrainConfig(**{**params.train.__dict__, "bonus_families": (family,)})
        train_bonus(features, config, params.evaluation)
        timings[f"bonus_{family}"] = time.perf_counter() - t
    timings["all_candidates"] = time.perf_counter() - start
    return timings


def _lightgbm(rows: int, cols: int, seed: int) -> float:
    from models.candidates import make_classifier

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    logit = x[:, 0] - 0.5 * x[:, 1] * x[:, 2] + 0.3 * np.sin(x[:, 3])
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    model = make_classifier("lightgbm", None, (), TrainConfig(seed=seed))  # type: ignore[arg-type]
    start = time.perf_counter()
    model.fit(x, y)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=Path("data/features"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    candidates = _candidates(args.features)
    lgb_seconds = _lightgbm(args.rows, args.cols, args.seed)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "candidates_seconds": {k: round(v, 2) for k, v in candidates.items()},
        "lightgbm": {"rows": args.rows, "cols": args.cols, "seconds": round(lgb_seconds, 2)},
        "targets": {
            "all_candidates_under_60s": {"seconds": round(candidates["all_candidates"], 2),
                                         "ratio_to_target": round(candidates["all_candidates"] / 60, 3),
                                         "met": candidates["all_candidates"] < 60},
            "lightgbm_1m_x_30_under_15s": {"seconds": round(lgb_seconds, 2),
                                           "ratio_to_target": round(lgb_seconds / 15, 3),
                                           "met": lgb_seconds < 15},
        },
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
