"""``carryon train cta|bonus``: train candidates, evaluate them and record them in MLflow.

Flags become one call of ``models.cta`` / ``models.bonus`` (or ``models.bandit`` for an
imported log) and ``pipeline.record``; every stage is imported inside the command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline._cli_common import EngineOpt, JsonOpt, ParamsOpt, QuietOpt, check_engine, engine_client, project_dir, run

FeaturesOpt = Annotated[Path, typer.Option("--features", help="Feature tables directory.")]


def register(app: typer.Typer) -> None:
    """Add ``carryon train`` to ``app``."""
    app.add_typer(train_app, name="train")


train_app = typer.Typer(help="Train candidates and record them in MLflow.", no_args_is_help=True)


def _train(kind: str, features_dir: Path, report: Path, params: Path, quiet: bool,
           log: Path | None = None, engine: str | None = None) -> dict[str, Any]:
    import dataclasses
    import hashlib

    from features._fsutil import atomic_write_text
    from models import _plots
    from pipeline.params import load_params
    from pipeline.progress import progress_bars
    from pipeline.record import file_sha256, git_commit, record_candidates
    from pipeline.tracking import open_tracking

    p = load_params(params)
    client = open_tracking(project_dir(), os.environ)  # fail fast, before minutes of training
    name: str | None = None
    artifacts: dict[str, Path] = {}
    # LightGBM candidates train on the Dask cluster with --engine dask (an imported log always trains here).
    with engine_client("local" if log is not None else engine, p.scale) as dask, \
            progress_bars(not quiet) as progress:
        lightgbm_fit = None
        if dask is not None:
            from models._dask_train import dask_lightgbm_fit

            lightgbm_fit = dask_lightgbm_fit(dask)
        if log is not None:
            from features.bandit import LOG_FILE, SPEC_FILE
            from models.bandit import REGISTERED_MODEL, train_bandit_candidates

            candidates = train_bandit_candidates(log, p.train, p.evaluation, p.policy.exploration)
            table, name, artifacts = log / LOG_FILE, REGISTERED_MODEL, {SPEC_FILE: log / SPEC_FILE}
        elif kind == "cta":
            from models.cta import train_cta

            candidates = train_cta(features_dir, p.train, p.evaluation, p.policy.exploration,
                                   p.policy.creator_caps, progress=progress, lightgbm_fit=lightgbm_fit)
            table = features_dir / "cta.parquet"
        else:
            from models.bonus import train_bonus

            candidates = train_bonus(features_dir, p.train, p.evaluation, progress=progress,
                                     lightgbm_fit=lightgbm_fit)
            table = features_dir / "bonus.parquet"
    settings = json.dumps([dataclasses.asdict(p.train), dataclasses.asdict(p.evaluation),
                           dataclasses.asdict(p.policy)], sort_keys=True, default=str)
    lineage = {"git_commit": git_commit(project_dir()), "data_sha256": file_sha256(table),
               "params_sha256": hashlib.sha256(settings.encode()).hexdigest()}
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import TrackingError

    try:
        recorded = record_candidates(client, candidates, lineage, name=name, artifacts=artifacts)
    except MlflowException as e:
        raise TrackingError(f"recording the {kind} candidates in MLflow failed: {e.message}") from e
    finally:
        for candidate in candidates:
            _plots.close(candidate.figures)
    data = {"kind": kind, "lineage": lineage, "candidates": [r.to_dict() for r in recorded],
            # keyed by family so `dvc metrics show/diff` can compare runs (it cannot flatten lists)
            "by_family": {r.family: {"version": r.version, **r.metrics} for r in recorded}}
    atomic_write_text(report, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def _train_summary(r: dict[str, Any]) -> str:
    lines = [f"{c['name']} version {c['version']} ({c['family']}): "
             + ", ".join(f"{k} {v:.4f}" for k, v in sorted(c["metrics"].items())
                         if k in ("auc", "ece", "lift_dr", "ndcg_at_5", "ndcg_at_5_gain"))
             + (f"; {c['rounds']['rounds']} rounds ({c['rounds']['rounds_rule']})" if "rounds" in c else "")
             for c in r["candidates"]]
    return "\n".join(lines)


@train_app.command("cta")
def train_cta_command(
    features_dir: FeaturesOpt = Path("data/features"),
    report: Annotated[Path, typer.Option(help="Where to write the JSON summary.")] = Path("metrics/train_cta.json"),
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
    log: Annotated[Path | None, typer.Option(
        "--log", help="Train on an imported bandit log instead (registered as cta-log).")] = None,
    quiet: QuietOpt = False,
    engine: EngineOpt = None,
) -> None:
    """Train the CTA candidates (logistic, LightGBM, MLP), evaluate them and their policy, register them."""
    check_engine(engine)
    run(lambda: _train("cta", features_dir, report, params, quiet, log, engine), as_json, _train_summary)


@train_app.command("bonus")
def train_bonus_command(
    features_dir: FeaturesOpt = Path("data/features"),
    report: Annotated[Path, typer.Option(help="Where to write the JSON summary.")] = Path(
        "metrics/train_bonus.json"
    ),
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = None,
) -> None:
    """Train the bonus-ranking candidates (LambdaRank, pointwise), evaluate them, register them."""
    check_engine(engine)
    run(lambda: _train("bonus", features_dir, report, params, quiet, engine=engine), as_json, _train_summary)
