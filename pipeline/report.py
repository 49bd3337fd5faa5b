"""The creator report: one self-contained HTML page per registered model, its versions compared in plain words.

Each page (``<out_dir>/<name>.html``) shows, per version, the kind of model, its role
(candidate, champion), the expected lift with its range, quality, size, speed (once the
benchmarks measured it), the export checks, and its plots inline as PNG data URIs: no
external resources, no JavaScript, no machine paths, every text escaped. Each page is also
logged as an artifact of a run of the ``reports`` experiment, which the registered-model tag
``carryon.report_run`` points to.

    >>> write_reports(client, ["cta", "bonus-ranker"], Path("reports")).to_dict()
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from features._fsutil import atomic_write_text
from features.schema import us_to_iso
from pipeline.bench_plot import pareto_section
from pipeline.registry import CANDIDATE, CHAMPION, VersionRow, list_versions
from pipeline.tracking import TAG_GATES, ensure_experiment, model_kind

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
_LATENCY: Final = re.compile(r"latency_(?P<stat>p\d{1,2}|mean|median|max)_(?P<unit>us|ms)(?:[._:/-](?P<device>.+))?")
FAMILIES: Final[Mapping[str, tuple[str, str]]] = {  # family -> (in words, what it is)
    "logreg": ("simple linear model", "logistic regression: weighs each signal and adds them up"),
    "lightgbm": ("gradient-boosted trees", "LightGBM: many small decision trees that vote together"),
    "mlp": ("small neural network", "a multi-layer perceptron with a few small hidden layers"),
    "lambdarank": ("learning-to-rank trees", "LightGBM LambdaRank: trees trained to put the best bonuses first"),
    "pointwise": ("pointwise model", "scores each bonus on its own (logistic regression), then sorts them"),
}
PLOTS: Final[Mapping[str, str]] = {  # known plot -> caption; shown in this order, then any others
    "lift.png": "Expected result of this model compared with what was shown before; bars are likely ranges.",
    "roc.png": "How well the model separates viewers who respond from those who do not (higher curve is better).",
    "calibration.png": "Predicted chances against what happened; close to the dashed line is better.",
    "ndcg_by_k.png": "How well claimed bonuses are placed in the top k of the list, for this model and popularity.",
}
_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:68rem;padding:0 1rem;
color:#1d2430;line-height:1.45}h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:2px solid #e3e7ee}
.muted{color:#5b6472;font-size:.9rem}.rec{background:#eef6ee;border-left:5px solid #3c8d40;padding:.8rem 1rem}
.warn{background:#fff6e5;border-left:5px solid #d48a00;padding:.6rem 1rem}table{border-collapse:collapse;width:100%}
th,td{border:1px solid #d8dde6;padding:.4rem .55rem;text-align:left;vertical-align:top}th{background:#f3f5f9}
.tag{display:inline-block;border-radius:.6rem;padding:0 .5rem;margin-right:.3rem;font-size:.85rem;background:#e3e7ee}
.tag.candidate{background:#cfe8d0}.tag.champion{background:#ffe3a8}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;max-width:32rem;vertical-align:top}
figure img{max-width:100%;height:auto;border:1px solid #e3e7ee}
figcaption{font-size:.85rem;color:#5b6472}dt{font-weight:600;margin-top:.5rem}dd{margin-left:1rem}
"""


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
    page = _page(name, versions, us_to_iso(time.time_ns() // 1000), pareto)
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


@dataclass(frozen=True)
class _Plot:
    name: str
    png: bytes | None
    problem: str | None = None  # why it is not shown


@dataclass(frozen=True)
class _Version:
    row: VersionRow
    model_bytes: int | None
    plots: tuple[_Plot, ...]
    features: tuple[str, ...]


def _collect(client: MlflowClient, row: VersionRow) -> _Version:
    if row.run_id is None:
        return _Version(row, _model_bytes(client, row), (), ())
    return _Version(row, _model_bytes(client, row), _plots(client, row.run_id), _features(client, row.run_id))


def _plots(client: MlflowClient, run_id: str) -> tuple[_Plot, ...]:
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
                found.append(_Plot(name, None, f"larger than {PLOT_MAX_BYTES // 2**20} MB"))
                continue
            try:
                data = Path(client.download_artifacts(run_id, info.path, tmp)).read_bytes()
            except (MlflowException, OSError) as e:
                found.append(_Plot(name, None, f"could not be read ({type(e).__name__})"))
                continue
            if not data.startswith(_PNG) or len(data) > PLOT_MAX_BYTES:
                found.append(_Plot(name, None, "not a PNG image of a reasonable size"))
                continue
            found.append(_Plot(name, data))
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


# --- plain words ---------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _family(row: VersionRow) -> tuple[str, str]:
    if row.family is None:
        return "model of unknown type", ""
    return FAMILIES.get(row.family, (f"model of type {row.family}", ""))


def _num(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _interval(m: Mapping[str, float], key: str) -> tuple[float, float, float] | None:
    values = (m.get(key), m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high"))
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return values  # type: ignore[return-value]


def _more(x: float, unit: str) -> str:
    return f"{_num(abs(x))} {'more' if x >= 0 else 'fewer'} {unit}"


def _lift(kind: str, m: Mapping[str, float]) -> tuple[str, str]:
    """(table cell, sentence) for the expected lift: clicks per 100 impressions, or NDCG@5 points over popularity."""
    if kind == "cta":
        est, unit = _interval(m, "lift_dr"), "clicks per 100 impressions"
        subject, baseline = "Showing this model's choice of call-to-action", "what you showed before"
    else:
        est, unit = _interval(m, "ndcg_at_5_gain"), "points of ranking quality (NDCG@5, out of 100)"
        subject, baseline = "Ordering bonuses with this model", "ordering them by popularity"
    if est is None:
        return "not measured", "The expected lift was not measured for this version."
    value, low, high = (x * 100 for x in est)
    cell = f"{value:+.2f} (range {low:+.2f} to {high:+.2f})"
    if low > 0:
        text = f"{subject} is expected to bring between {_num(low)} and {_more(high, unit)} than {baseline}"
    elif high < 0:
        text = f"{subject} is expected to bring between {_num(-high)} and {_more(low, unit)} than {baseline}"
    else:
        text = (f"{subject} could bring anything from {_more(low, unit)} to {_more(high, unit)} than {baseline}; "
                "the data cannot tell yet whether it helps")
    guess = f"{_num(abs(value))} {'more' if value >= 0 else 'fewer'}"
    return cell, f"{text} (best guess: {guess})."


def _quality(kind: str, m: Mapping[str, float]) -> tuple[str, list[tuple[str, str]]]:
    """(table cell, [(measure, explanation)])."""
    def ok(key: str) -> bool:
        return key in m and math.isfinite(m[key])

    cell, items = [], []
    if kind == "cta":
        if ok("auc"):
            auc = m["auc"]
            verdict = ("barely better than a coin toss" if auc < 0.55 else "modest" if auc < 0.65
                       else "good" if auc < 0.75 else "strong")
            cell.append(f"AUC {auc:.3f}")
            items.append((f"AUC {auc:.3f} ({verdict})", "How well it tells apart viewers who will click from those "
                          "who will not: 0.5 is a coin toss, 1 is perfect."))
        if ok("ece"):
            ece = m["ece"] * 100
            verdict = "well calibrated" if ece < 2 else "fairly calibrated" if ece < 5 else "poorly calibrated"
            cell.append(f"calibration off by {ece:.1f} pts")
            items.append((f"Calibration error {ece:.1f} percentage points ({verdict})", "How far its predicted chance "
                          "of a click is from what really happened, on average: lower is better."))
    else:
        for key, label, what in (
            ("ndcg_at_5", "NDCG@5", "How high the bonuses viewers claimed sit in the top 5 of the list: "
             "1 means always first, 0 means never in the top 5."),
            ("ndcg_at_3", "NDCG@3", "The same for the top 3, the places most viewers see."),
            ("map", "MAP", "Mean average precision: how early claimed bonuses appear, averaged over every list; "
             "1 is perfect."),
        ):
            if ok(key):
                cell.append(f"{label} {m[key]:.3f}")
                items.append((f"{label} {m[key]:.3f}", what))
    return (" · ".join(cell) or "not measured"), items


def _size(n: int | None) -> str:
    if n is None:
        return "not known"
    for unit, scale in (("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _latencies(row: VersionRow) -> list[str]:
    """Latency figures the benchmarks logged (metrics ``latency_<stat>_<us|ms>[.<device>]``, tags carryon.latency*)."""
    found = []
    for key, value in sorted(row.metrics.items()):
        match = _LATENCY.fullmatch(key)
        if match is None or not math.isfinite(value):
            continue
        us = value * (1000.0 if match["unit"] == "ms" else 1.0)
        took = f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"
        stat = match["stat"]
        said = {"mean": f"{took} on average", "median": f"{took} for a typical decision",
                "max": f"at most {took}"}.get(stat, f"{took} or less for {stat[1:]} out of 100 decisions")
        found.append(f"{said} on {match['device'] or row.tags.get('carryon.device') or 'the benchmark device'}")
    found += [f"{k.removeprefix('carryon.')}: {v}" for k, v in sorted(row.tags.items())
              if k.startswith("carryon.latency")]
    return found


def _gates(row: VersionRow) -> tuple[str, str]:
    if row.gates is None:
        return "not checked yet", "The export checks have not run for this version yet."
    if row.gates == "passed":
        return "passed", "It passed the export checks: the on-device version gives the same answers as this one."
    if row.gates == "failed":
        return "failed", "It failed the export checks, so it cannot be shipped to devices as it is."
    return row.gates, f"Export checks: {row.gates}."


# --- the page ------------------------------------------------------------------------------------


def _recommendation(name: str, kind: str, versions: Sequence[_Version]) -> str:
    by_alias = {alias: v for v in versions for alias in v.row.aliases}
    champion = by_alias.get(CHAMPION)
    chosen = by_alias.get(CANDIDATE)
    if chosen is None:
        text = ("No version is the candidate yet: run <code>carryon select</code>, which picks one from quality "
                "and the export checks.")
    else:
        row = chosen.row
        _, lift = _lift(kind, row.metrics)
        gate = {"passed": " and passed the export checks", None: ""}.get(row.gates, "")
        text = (f"The current candidate is version {row.version} ({_e(_family(row)[0])}) because the selection rule "
                f"ranked it best among the versions that met its quality limits{_e(gate)}. {_e(lift)}")
        low = _interval(row.metrics, "lift_dr" if kind == "cta" else "ndcg_at_5_gain")
        if low is None or low[1] <= 0:
            text += " Note: its likely range still includes no gain, so switching to it is a bet, not a sure win."
        if champion is chosen:
            text += " It is already your champion: nothing to do."
        else:
            text += (f" To use it, promote it: <code>carryon models promote {_e(name)} {row.version}</code>.")
    if champion is not None:
        text += f" Your champion (the version you chose to run) is version {champion.row.version}."
    return f'<p class="rec" id="recommendation"><strong>Recommendation.</strong> {text}</p>'


def _tags(row: VersionRow) -> str:
    return "".join(f'<span class="tag {_e(a)}">{_e(a)}</span>' for a in row.aliases)


def _table(kind: str, versions: Sequence[_Version]) -> str:
    lift_head = "Expected lift, clicks per 100 impressions" if kind == "cta" else "Gain over popularity, points"
    head = ["Version", "Model", "Role", lift_head, "Quality", "Size", "Speed", "Export checks"]
    lines = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for v in versions:
        row = v.row
        cells = [f'<a href="#v{row.version}">{row.version}</a>', _e(_family(row)[0]), _tags(row) or "—",
                 _e(_lift(kind, row.metrics)[0]), _e(_quality(kind, row.metrics)[0]), _e(_size(v.model_bytes)),
                 _e(_latencies(row)[0] if _latencies(row) else "not measured yet"), _e(_gates(row)[0])]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(lines) + "</tbody></table>"


def _section(kind: str, v: _Version) -> str:
    row = v.row
    words, what = _family(row)
    quality = _quality(kind, row.metrics)[1]
    latencies = _latencies(row)
    parts = [f'<section id="v{row.version}"><h2>Version {row.version}: {_e(words)} {_tags(row)}</h2>',
             f'<p class="muted">{_e(what)}{" · " if what else ""}registered {_e(row.created[:16].replace("T", " "))}'
             " UTC</p><dl>",
             f"<dt>{'Expected lift' if kind == 'cta' else 'Gain over popularity'}</dt>"
             f"<dd>{_e(_lift(kind, row.metrics)[1])}</dd>",
             "<dt>Quality</dt>",
             *(f"<dd><strong>{_e(label)}</strong>: {_e(text)}</dd>" for label, text in quality),
             *(() if quality else ("<dd>not measured</dd>",)),
             f"<dt>Size</dt><dd>{_e(_size(v.model_bytes))} (the trained model's files, before export "
             "to devices)</dd>",
             "<dt>Speed on devices</dt>",
             *(f"<dd>{_e(text)}</dd>" for text in latencies),
             *(() if latencies else ("<dd>not measured yet (the benchmarks have not run for this version)</dd>",)),
             f"<dt>Export checks</dt><dd>{_e(_gates(row)[1])}</dd>"]
    if v.features:
        parts.append(f"<dt>Signals it looks at</dt><dd>{len(v.features)}: {_e(', '.join(v.features))}</dd>")
    parts.append("</dl>")
    for plot in v.plots:
        caption = PLOTS.get(plot.name, plot.name)
        if plot.png is None:
            parts.append(f'<p class="warn">Plot {_e(plot.name)} is not shown: {_e(plot.problem)}.</p>')
            continue
        width, height = int.from_bytes(plot.png[16:20], "big"), int.from_bytes(plot.png[20:24], "big")
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
                     f'alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>')
    details = "".join(f"<tr><td>{_e(k)}</td><td>{_e(f'{x:.6g}')}</td></tr>" for k, x in sorted(row.metrics.items()))
    engineer = [f"MLflow run {row.run_id or 'none'}", *(f"{k} = {x}" for k, x in sorted(row.tags.items())
                                                        if k in ("carryon.spec_hash", "carryon.kind", TAG_GATES))]
    parts.append(f"<details><summary>Details for engineers</summary><p class=\"muted\">{_e(' · '.join(engineer))}"
                 f"</p><table><tbody>{details}</tbody></table></details></section>")
    return "".join(parts)


def _page(name: str, versions: Sequence[_Version], generated: str, pareto: str = "") -> str:
    kind = model_kind(name)
    title = ("Which call-to-action to show: model versions" if kind == "cta"
             else "How to order micro-bonuses: model versions")
    intro = (
        "Each version is a model trained on your past drops and judged on your latest ones, which it never saw. "
        "Its expected lift is the edge personalization lift: how many more viewers click when the model picks the "
        "call-to-action, compared with what you showed them. A click here means a click on the call-to-action or "
        "an enrollment soon after it."
        if kind == "cta" else
        "Each version is a model trained on your past drops and judged on your latest ones, which it never saw. "
        "Its gain is how much better it places the bonuses viewers really claimed near the top of the list than "
        "simply ordering your bonuses by how often they were claimed before (popularity)."
    )
    ranges = ("Ranges are likely ranges (95% confidence intervals with the default settings), found by resampling "
              "viewers' sessions: a range entirely above zero means the model very likely helps.")
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="muted">Registered model <strong>{_e(name)}</strong> · {len(versions)} version(s) · '
            f"generated {_e(generated[:16].replace('T', ' '))} UTC</p>",
            f"<p>{_e(intro)}</p><p>{_e(ranges)}</p>",
            _recommendation(name, kind, versions)]
    if versions:
        body += [_table(kind, versions), pareto, *(_section(kind, v) for v in versions)]
    else:
        body.append("<p>No versions yet: train candidates first (<code>carryon train</code>).</p>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(f'carryon report: {name}')}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
