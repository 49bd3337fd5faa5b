"""Record fitted candidates in MLflow: one run each, then one registered model version.

A version is registered only after its run holds everything (params, metrics, plots,
the native model with a synthetic input example and signature), so a failure midway
leaves a failed run and no half-registered version.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.result import Candidate
from pipeline.tracking import BONUS_MODEL, CTA_MODEL, TAG_FAMILY, Kind, experiment, store_failure

if TYPE_CHECKING:
    from mlflow import MlflowClient

TAG_KIND = "carryon.kind"
TAG_SPEC = "carryon.spec_hash"


@dataclass(frozen=True)
class Recorded:
    name: str  # registered model
    version: int
    run_id: str
    family: str
    metrics: Mapping[str, float]
    rounds: Mapping[str, Any] = field(default_factory=dict)  # a LightGBM candidate's chosen rounds (models.rounds)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "version": self.version, "run_id": self.run_id, "family": self.family,
               "metrics": dict(self.metrics)}
        return out | ({"rounds": dict(self.rounds)} if self.rounds else {})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(project_dir: Path) -> str:
    """The checked-out commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True,
                             check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _log_model(candidate: Candidate) -> str:
    """Log the native model with its synthetic example; returns the logged model's URI."""
    import lightgbm as lgb
    import mlflow
    from mlflow.models import infer_signature

    example = candidate.input_example
    model = candidate.model
    output = model.predict_proba(example)[:, 1] if hasattr(model, "predict_proba") else model.predict(example)
    signature = infer_signature(example, np.asarray(output, dtype=np.float64))
    if isinstance(model, lgb.LGBMModel):
        # The booster in LightGBM's own text format: no pickle, and loadable without scikit-learn.
        info = mlflow.lightgbm.log_model(model.booster_, name="model", input_example=example, signature=signature)
    else:
        from skops.io import dumps, get_untrusted_types

        # skops refuses types outside its default allowlist; these are our own freshly
        # fitted estimators, so the exact types they contain are the ones to trust.
        trusted = get_untrusted_types(data=dumps(model))
        info = mlflow.sklearn.log_model(model, name="model", input_example=example, signature=signature,
                                        skops_trusted_types=trusted)
    return str(info.model_uri)


def record_candidates(
    client: MlflowClient, candidates: list[Candidate], lineage: Mapping[str, str], *,
    name: str | None = None, artifacts: Mapping[str, Path] | None = None,
) -> list[Recorded]:
    """Log every candidate as a run of its kind's experiment and register it as a version.

    ``name`` overrides the registered model (default ``cta`` or ``bonus-ranker`` by kind);
    ``artifacts`` are extra files logged with every run (artifact path -> file).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from models.rounds import RECORD_KEYS

    recorded: list[Recorded] = []
    for candidate in candidates:
        registered = name or (CTA_MODEL if candidate.kind == "cta" else BONUS_MODEL)
        kind: Kind = "cta" if candidate.kind == "cta" else "bonus"
        tags = {TAG_FAMILY: candidate.family, TAG_KIND: candidate.kind, TAG_SPEC: candidate.spec_hash,
                **{f"carryon.{k}": v for k, v in lineage.items()}}
        try:
            with mlflow.start_run(experiment_id=experiment(client, kind), run_name=candidate.name,
                                  tags=tags) as run:
                mlflow.log_params(candidate.params)
                mlflow.log_params({f"data.{k}": v for k, v in candidate.info.items()})
                mlflow.log_metrics(candidate.metrics)
                mlflow.log_dict({"feature_names": list(candidate.feature_names), "spec_hash": candidate.spec_hash},
                                "feature_names.json")
                for file_name, figure in candidate.figures.items():
                    mlflow.log_figure(figure, f"plots/{file_name}")
                for artifact_path, file in (artifacts or {}).items():
                    folder = Path(artifact_path).parent.as_posix()
                    mlflow.log_artifact(str(file), artifact_path=None if folder == "." else folder)
                model_uri = _log_model(candidate)
            # Last: the version is created by one request, one transaction in the store, so it exists only whole.
            version = mlflow.register_model(model_uri, registered, tags=tags)
        except MlflowException as e:  # e.g. the tracking server went away mid-run and did not come back
            before = ", ".join(f"{r.name} version {r.version}" for r in recorded) or "none"
            doing = f"recording candidate {candidate.name} (registered before it: {before})"
            raise store_failure(client.tracking_uri, Path.cwd(), doing, e) from e
        rounds = {k: candidate.params[k] for k in RECORD_KEYS if k in candidate.params}
        recorded.append(Recorded(registered, int(version.version), run.info.run_id, candidate.family,
                                 dict(candidate.metrics), rounds))
    return recorded
