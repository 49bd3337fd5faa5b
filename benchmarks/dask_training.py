"""Distributed LightGBM against local: AUC (CTA) and NDCG@5 (LambdaRank) on the same feature tables.

Usage (from the project root, after ``dvc repro``)::

    python benchmarks/dask_training.py                         # data/features, 2 workers
    python benchmarks/dask_training.py --features data/features --workers 1

Trains the LightGBM CTA candidate and the LambdaRank ranker twice with the params'
training settings -- locally, and with ``lightgbm.dask`` on a LocalCluster of
``--workers`` worker processes (one thread each) through ``models._dask_train`` -- and
prints one JSON document: each side's AUC / NDCG@5 and wall seconds, the absolute
differences, and whether each is within the requirement (0.005). The bootstrap count is
lowered to 50 (it affects only the intervals, not AUC or NDCG).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.005


def log(message: str) -> None:
    print(f"[dask_training {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lightgbm.dask vs local LightGBM: AUC and NDCG@5 (JSON on stdout)")
    parser.add_argument("--features", type=Path, default=ROOT / "data" / "features", help="feature tables directory")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="params.yaml")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default: 2)")
    args = parser.parse_args(argv)

    from features._dask import DaskSettings, dask_client
    from models._dask_train import dask_lightgbm_fit
    from models.bonus import train_bonus
    from models.cta import train_cta
    from pipeline.params import load_params

    p = load_params(args.params)
    config = replace(p.train, cta_families=("lightgbm",), bonus_families=("lambdarank",))
    evaluation = replace(p.evaluation, n_bootstrap=50)

    def both(fit: Any) -> dict[str, Any]:
        started = time.perf_counter()
        [cta] = train_cta(args.features, config, evaluation, p.policy.exploration, p.policy.creator_caps,
                          lightgbm_fit=fit)
        middle = time.perf_counter()
        [ranker] = train_bonus(args.features, config, evaluation, lightgbm_fit=fit)
        return {"cta_auc": cta.metrics["auc"], "cta_wall_s": middle - started,
                "ranker_ndcg_at_5": ranker.metrics["ndcg_at_5"], "ranker_wall_s": time.perf_counter() - middle,
                "types": [type(cta.model).__name__, type(ranker.model).__name__]}

    log("local training")
    local = both(None)
    log(f"lightgbm.dask on {args.workers} worker(s)")
    with dask_client(DaskSettings(None, workers=args.workers, threads_per_worker=1)) as client:
        distributed = both(dask_lightgbm_fit(client))
    auc_diff = abs(distributed["cta_auc"] - local["cta_auc"])
    ndcg_diff = abs(distributed["ranker_ndcg_at_5"] - local["ranker_ndcg_at_5"])
    out = {
        "benchmark": "dask_training",
        "features": args.features.name,
        "workers": args.workers,
        "local": local,
        "dask": distributed,
        "abs_diff": {"cta_auc": auc_diff, "ranker_ndcg_at_5": ndcg_diff},
        "tolerance": TOLERANCE,
        "within_tolerance": {"cta_auc": auc_diff <= TOLERANCE, "ranker_ndcg_at_5": ndcg_diff <= TOLERANCE},
    }
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
