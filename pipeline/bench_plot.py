"""Quality against speed: the Pareto front of each registered model's versions on one device profile.

``write_pareto`` writes, per registered model, the DVC plot data ``bench_pareto_<name>.json``
(one row per measured version: quality, p95 latency, size, on the front or not) and the figure
``bench_pareto_<name>.png``, and logs both to a run of the ``bench`` experiment that the
registered-model tag ``carryon.pareto_run`` points to; ``pareto_section`` turns that run into
the creator report's section. A version is on the front when no other version is at least as
good in quality and as fast, and better in one of them.

    >>> write_pareto(client, {"cta": "auc", "bonus-ranker": "ndcg_at_5"}, "laptop", Path("metrics"))
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from features._fsutil import atomic_write_bytes, atomic_write_text
from pipeline.bench_results import measured_devices
from pipeline.registry import VersionRow, list_versions
from pipeline.tracking import ensure_experiment

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["PARETO_EXPERIMENT", "TAG_PARETO_RUN", "ParetoRow", "pareto_front", "pareto_rows", "pareto_section",
           "write_pareto"]

PARETO_EXPERIMENT: Final = "bench"  # one run per write_pareto call holds the data and figures
TAG_PARETO_RUN: Final = "carryon.pareto_run"  # registered-model tag: the run holding its latest Pareto plot
ARTIFACT_DIR: Final = "pareto"
PNG_MAX_BYTES: Final = 5 * 2**20
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_PNG: Final = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ParetoRow:
    """One measured version: its quality, its p95 latency on the chosen device, its size, on the front or not."""

    version: int
    family: str | None
    quality: float
    p95_us: float
    size_bytes: int | None
    on_front: bool

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "family": self.family, "quality": self.quality, "p95_us": self.p95_us,
                "size_bytes": self.size_bytes, "on_front": self.on_front}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (quality, latency) points, which are on the front (higher quality and lower latency are better)."""
    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    return [not any(dominates(other, point) for other in points) for point in points]


def pareto_rows(
    rows: Sequence[VersionRow], metric: str, profile: str, device_id: str | None = None
) -> tuple[str | None, list[ParetoRow]]:
    """(device, rows) for the versions measured on ``device_id`` (default: the ``profile`` device measuring most)."""
    measured: dict[str, dict[int, tuple[VersionRow, Mapping[str, float]]]] = {}
    for row in rows:
        quality = row.metrics.get(metric)
        if quality is None or not math.isfinite(quality):
            continue
        for device in measured_devices(row):
            p95 = device.figures.get("p95_us")
            if device.emulated or device.profile != profile or p95 is None or not math.isfinite(p95):
                continue
            measured.setdefault(device.device_id, {})[row.version] = (row, device.figures)
    if device_id is None:
        counts = Counter({device: len(versions) for device, versions in measured.items()})
        device_id = max(sorted(counts), key=counts.__getitem__) if counts else None
    chosen = sorted(measured.get(device_id or "", {}).values(), key=lambda item: item[0].version)
    points = [(row.metrics[metric], figures["p95_us"]) for row, figures in chosen]
    front = pareto_front(points)
    return device_id, [
        ParetoRow(row.version, row.family, quality, p95,
                  None if "size_bytes" not in figures else int(figures["size_bytes"]), on)
        for (row, figures), (quality, p95), on in zip(chosen, points, front, strict=True)
    ]


def write_pareto(
    client: MlflowClient, metrics: Mapping[str, str], profile: str, out_dir: Path, *, device_id: str | None = None
) -> dict[str, Any]:
    """Per registered model (name -> quality metric): write and log its Pareto data and figure; return a summary."""
    for name in metrics:
        if not _NAME.fullmatch(name):
            raise ValueError(f"registered model name must match {_NAME.pattern} to name a plot file, got {name!r}")
    out_dir = Path(out_dir)
    written = {}
    for name, metric in metrics.items():
        device, rows = pareto_rows(list_versions(client, name), metric, profile, device_id)
        data = {"name": name, "metric": metric, "profile": profile, "device_id": device,
                "rows": [r.to_dict() for r in rows]}
        atomic_write_text(out_dir / f"bench_pareto_{name}.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
        atomic_write_bytes(out_dir / f"bench_pareto_{name}.png", _figure(name, metric, profile, device, rows))
        written[name] = {"device_id": device, "versions": len(rows),
                         "front": [r.version for r in rows if r.on_front],
                         "files": [f"bench_pareto_{name}.json", f"bench_pareto_{name}.png"]}
    run_id = _log(client, list(metrics), out_dir)
    return {"profile": profile, "run_id": run_id, "models": written}


def _log(client: MlflowClient, names: Sequence[str], out_dir: Path) -> str:
    run = client.create_run(ensure_experiment(client, PARETO_EXPERIMENT), run_name="pareto",
                            tags={"carryon.pareto_of": ",".join(names)})
    run_id = str(run.info.run_id)
    try:
        for name in names:
            for suffix in ("json", "png"):
                client.log_artifact(run_id, str(out_dir / f"bench_pareto_{name}.{suffix}"), ARTIFACT_DIR)
            client.set_registered_model_tag(name, TAG_PARETO_RUN, run_id)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _figure(name: str, metric: str, profile: str, device: str | None, rows: Sequence[ParetoRow]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), dpi=100)
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, f"no version measured on a {profile} device yet", ha="center", va="center")
        ax.set_axis_off()
    else:
        sizes = [r.size_bytes or 0 for r in rows]
        largest = max(sizes) or 1
        area = [40 + 360 * s / largest for s in sizes]  # marker area ~ model size
        colors = ["#3c8d40" if r.on_front else "#9aa3b2" for r in rows]
        ax.scatter([r.p95_us for r in rows], [r.quality for r in rows], s=area, c=colors, alpha=0.8,
                   edgecolors="#1d2430", linewidths=0.6)
        front = sorted((r.p95_us, r.quality) for r in rows if r.on_front)
        ax.plot([p[0] for p in front], [p[1] for p in front], color="#3c8d40", linewidth=1, drawstyle="steps-post")
        for r in rows:
            ax.annotate(f"v{r.version} {r.family or ''}".strip(), (r.p95_us, r.quality), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        if max(r.p95_us for r in rows) > 20 * min(r.p95_us for r in rows):
            ax.set_xscale("log")
        ax.set_xlabel(f"p95 decision latency on {device} (µs)")
        ax.set_ylabel(metric)
        ax.margins(x=0.15, y=0.12)  # room for the labels of the outermost versions
        ax.grid(True, alpha=0.3)
    ax.set_title(f"{name}: {metric} against p95 latency ({profile}); green: best trade-offs, size ~ model bytes",
                 fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# --- the creator report's section ------------------------------------------------------------------


def pareto_section(client: MlflowClient, name: str) -> str:
    """The creator report's HTML section for ``name``'s latest Pareto plot ("" if the benchmarks have not run)."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = client.get_registered_model(name).tags.get(TAG_PARETO_RUN)
        if not run_id or not _NAME.fullmatch(name):
            return ""
        with tempfile.TemporaryDirectory(prefix="carryon-pareto-") as tmp:
            base = f"{ARTIFACT_DIR}/bench_pareto_{name}"
            data = json.loads(Path(client.download_artifacts(run_id, f"{base}.json", tmp)).read_text("utf-8"))
            png = Path(client.download_artifacts(run_id, f"{base}.png", tmp)).read_bytes()
        return _section_html(data, png)
    except (MlflowException, OSError, ValueError, TypeError, AttributeError):
        return '<p class="warn">The quality-against-speed plot could not be read from MLflow.</p>'


def _section_html(data: Mapping[str, Any], png: bytes) -> str:
    e = html.escape
    rows = data.get("rows") or []
    parts = ['<section id="pareto"><h2>Quality against speed</h2>',
             f"<p>Each version measured on the device {e(str(data.get('device_id')))} (profile "
             f"{e(str(data.get('profile')))}): its quality ({e(str(data.get('metric')))}, higher is better) against "
             "the time 95 out of 100 decisions take (lower is better); bigger dots are bigger models. The best "
             "trade-offs are the versions no other version beats on both at once.</p>"]
    if png.startswith(_PNG) and len(png) <= PNG_MAX_BYTES:
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        parts.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" '
                     f'width="{width}" height="{height}" alt="Quality against p95 latency per version">'
                     "<figcaption>Green: the best trade-offs (the Pareto front).</figcaption></figure>")
    if rows:
        parts.append("<table><thead><tr><th>Version</th><th>Model</th><th>Quality</th><th>p95 latency</th>"
                     "<th>Size</th><th>Best trade-off</th></tr></thead><tbody>")
        for r in rows:
            size = "not known" if r.get("size_bytes") is None else f"{int(r['size_bytes']) / 1024:.1f} kB"
            parts.append(f"<tr><td>{e(str(r.get('version')))}</td><td>{e(str(r.get('family') or ''))}</td>"
                         f"<td>{float(r.get('quality', math.nan)):.4f}</td><td>{float(r.get('p95_us', math.nan)):.0f}"
                         f" µs</td><td>{e(size)}</td><td>{'yes' if r.get('on_front') else 'no'}</td></tr>")
        parts.append("</tbody></table>")
    return "".join(parts) + "</section>"
