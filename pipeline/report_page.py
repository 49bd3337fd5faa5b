"""The creator report's page: one registered model's versions in plain words, as one self-contained HTML.

``render_page`` shows, per version, the kind of model, its role (candidate, champion), the
expected lift with its range, quality, size, speed (once the benchmarks measured it), the
export checks, and its plots inline as PNG data URIs: no external resources, no JavaScript,
no machine paths, every text escaped. ``pipeline.report`` gathers what it shows.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pipeline.registry import CANDIDATE, CHAMPION, VersionRow
from pipeline.tracking import TAG_GATES, model_kind

__all__ = ["FAMILIES", "PLOTS", "Plot", "VersionEvidence", "render_page"]

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
class Plot:
    """One plot of a version's run: the PNG, or why it is not shown."""

    name: str
    png: bytes | None
    problem: str | None = None  # why it is not shown


@dataclass(frozen=True)
class VersionEvidence:
    """What the page says of one version: its registry row, model size, plots and feature names."""

    row: VersionRow
    model_bytes: int | None
    plots: tuple[Plot, ...]
    features: tuple[str, ...]


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


def _recommendation(name: str, kind: str, versions: Sequence[VersionEvidence]) -> str:
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


def _table(kind: str, versions: Sequence[VersionEvidence]) -> str:
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


def _section(kind: str, v: VersionEvidence) -> str:
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


def render_page(name: str, versions: Sequence[VersionEvidence], generated: str, pareto: str = "") -> str:
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
