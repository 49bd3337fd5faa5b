"""The creator report: one self-contained HTML page per registered model, its versions compared in plain words.

This module gathers each version's evidence from MLflow (registry row, model size, plots,
feature names), has ``pipeline.report_page`` render the page (``<out_dir>/<name>.html``) and
logs it as an artifact of a run of the ``reports`` experiment, which the registered-model
tag ``carryon.report_run`` points to; the file is written only once MLflow holds it.

    >>> write_reports(client, ["cta", "bonus-ranker"], Path("reports")).to_dict()
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from features._fsutil import atomic_write_text
from features.schema import us_to_iso
from pipeline.bench_plot import pareto_section
from pipeline.registry import CANDIDATE, CHAMPION, VersionRow, list_versions
from pipeline.report_page import PLOTS, Plot, VersionEvidence, render_page
from pipeline.tracking import ensure_experiment

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["REPORTS_EXPERIMENT", "TAG_REPORT_OF", "TAG_REPORT_RUN", "ModelReport", "ReportSummary", "write_reports"]

REPORTS_EXPERIMENT: Final = "reports"  # one run per written page
TAG_REPORT_OF: Final = "carryon.report_of"  # report-run tag: the registered model the page describes
TAG_REPORT_RUN: Final = "carryon.report_run"  # registered-model tag: run id holding its latest page
PLOT_MAX_BYTES: Final = 5 * 2**20  # a larger image is left out of the page (and the page says so)
_PNG: Final = b"\x89PNG\r\n\x1a\n"
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_MODEL_METADATA: Final = frozenset({"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt",
                                    "input_example.json", "serving_input_example.json", "registered_model_meta"})
@dataclass(frozen=True)
class ModelReport:
    """One written page: which model, which versions, where (a file name in the output directory)."""

    name: str
    file: str
    versions: tuple[int, ...]
    candidate: int | None
    champion: int | None
    plots: int  # images embedded in the page
    run_id: str  # run of the ``reports`` experiment holding the page

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "versions": list(self.versions), "candidate": self.candidate,
                "champion": self.champion, "plots": self.plots, "run_id": self.run_id}


@dataclass(frozen=True)
class ReportSummary:
    """What ``write_reports`` wrote and logged."""

    reports: tuple[ModelReport, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": REPORTS_EXPERIMENT, "reports": [r.to_dict() for r in self.reports]}


def write_reports(client: MlflowClient, names: Sequence[str], out_dir: Path) -> ReportSummary:
    """Write ``out_dir/<name>.html`` for each registered model and log it to MLflow (experiment ``reports``)."""
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of registered model names, not the string {names!r}")
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"registered model name must match {_NAME.pattern} to name a report file, got {name!r}")
    return ReportSummary(tuple(_write_one(client, name, Path(out_dir)) for name in names))


def _write_one(client: MlflowClient, name: str, out_dir: Path) -> ModelReport:
    rows = list_versions(client, name)  # RegistryError if the model is not registered
    with _no_progress_bars():
        versions = [_collect(client, row) for row in rows]
        pareto = pareto_section(client, name)  # "" until the bench stage has measured versions
    page = render_page(name, versions, us_to_iso(time.time_ns() // 1000), pareto)
    file_name = f"{name}.html"
    run_id = _log_page(client, name, file_name, page, rows)
    atomic_write_text(out_dir / file_name, page)  # only once MLflow holds it
    aliases = {alias: row.version for row in rows for alias in row.aliases}
    return ModelReport(name, file_name, tuple(row.version for row in rows), aliases.get(CANDIDATE),
                       aliases.get(CHAMPION), sum(p.png is not None for v in versions for p in v.plots), run_id)


def _log_page(client: MlflowClient, name: str, file_name: str, page: str, rows: Sequence[VersionRow]) -> str:
    """A FINISHED run of ``reports`` with the page as its artifact (FAILED if logging breaks midway)."""
    covered = ",".join(str(row.version) for row in rows)
    run = client.create_run(ensure_experiment(client, REPORTS_EXPERIMENT), run_name=f"report-{name}",
                            tags={TAG_REPORT_OF: name, "carryon.report_versions": covered})
    run_id = str(run.info.run_id)
    try:
        with tempfile.TemporaryDirectory(prefix="carryon-report-") as tmp:
            local = Path(tmp) / file_name
            local.write_text(page, encoding="utf-8")
            client.log_artifact(run_id, str(local))
        client.set_registered_model_tag(name, TAG_REPORT_RUN, run_id)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


# --- evidence from MLflow ------------------------------------------------------------------------


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar on stderr for every download; the stage's stderr is for errors."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(key)
    os.environ[key] = saved if saved is not None else "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)


def _collect(client: MlflowClient, row: VersionRow) -> VersionEvidence:
    if row.run_id is None:
        return VersionEvidence(row, _model_bytes(client, row), (), ())
    return VersionEvidence(row, _model_bytes(client, row), _plots(client, row.run_id), _features(client, row.run_id))


def _plots(client: MlflowClient, run_id: str) -> tuple[Plot, ...]:
    from mlflow.exceptions import MlflowException

    try:
        listed = [f for f in client.list_artifacts(run_id, "plots") if not f.is_dir and f.path.endswith(".png")]
    except (MlflowException, OSError):
        return ()
    order = list(PLOTS)
    listed.sort(key=lambda f: (order.index(_base(f.path)) if _base(f.path) in order else len(order), f.path))
    found = []
    with tempfile.TemporaryDirectory(prefix="carryon-plots-") as tmp:
        for info in listed:
            name = _base(info.path)
            if info.file_size is not None and info.file_size > PLOT_MAX_BYTES:
                found.append(Plot(name, None, f"larger than {PLOT_MAX_BYTES // 2**20} MB"))
                continue
            try:
                data = Path(client.download_artifacts(run_id, info.path, tmp)).read_bytes()
            except (MlflowException, OSError) as e:
                found.append(Plot(name, None, f"could not be read ({type(e).__name__})"))
                continue
            if not data.startswith(_PNG) or len(data) > PLOT_MAX_BYTES:
                found.append(Plot(name, None, "not a PNG image of a reasonable size"))
                continue
            found.append(Plot(name, data))
    return tuple(found)


def _features(client: MlflowClient, run_id: str) -> tuple[str, ...]:
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory(prefix="carryon-features-") as tmp:
            data = json.loads(Path(client.download_artifacts(run_id, "feature_names.json", tmp)).read_text())
    except (MlflowException, OSError, ValueError):
        return ()
    names = data.get("feature_names") if isinstance(data, dict) else None
    return tuple(str(n) for n in names) if isinstance(names, list) else ()


def _model_bytes(client: MlflowClient, row: VersionRow) -> int | None:
    """Bytes of the logged model's own files (not MLflow's metadata beside them), or None if unknown."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(row.name, str(row.version))
        source = str(mv.source or "")
        model_id = getattr(mv, "model_id", None) or (source[len("models:/"):].split("/")[0]
                                                     if source.startswith("models:/m-") else None)
        if model_id:
            files = _walk(lambda path: client.list_logged_model_artifacts(model_id, path), None)
        elif source.startswith("runs:/") and "/" in source[len("runs:/"):]:
            run_id, inside = source[len("runs:/"):].split("/", 1)
            files = _walk(lambda path: client.list_artifacts(run_id, path), inside)
        else:
            return None
    except (MlflowException, OSError):
        return None
    sizes = [size for path, size in files if _base(path) not in _MODEL_METADATA]
    return sum(sizes) if sizes else None


def _walk(listing: Callable[[str | None], list[Any]], path: str | None, depth: int = 0) -> list[tuple[str, int]]:
    files: list[tuple[str, int]] = []
    for info in listing(path):
        if info.is_dir and depth < 5:
            files += _walk(listing, info.path, depth + 1)
        elif not info.is_dir:
            files.append((str(info.path), int(info.file_size or 0)))
    return files


def _base(path: str) -> str:
    return PurePosixPath(path).name
