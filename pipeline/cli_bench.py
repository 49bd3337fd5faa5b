"""``carryon bench``: run the benchmark job on this device, and ingest reports into MLflow.

``bench run`` needs only the base dependencies (it runs on phones and ARM rigs);
``bench ingest`` runs on the build machine. Stage code is imported inside each command.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline._cli_common import JsonOpt

bench_app = typer.Typer(
    help="Benchmarks on target hardware: measure models on this device, ingest reports into MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(bench_app, name="bench")


def _fail(message: str) -> typer.Exit:
    from pipeline._cli_common import fail

    return fail(message)


def _settings(params: Path | None, threads: int | None) -> tuple[Any, dict[str, Any]]:
    """BenchSettings and profiles from params.yaml (when given or present here), flags overriding."""
    from dataclasses import replace

    from benchmarks.device import BenchSettings

    path = params if params is not None else (Path("params.yaml") if Path("params.yaml").is_file() else None)
    settings, profiles = BenchSettings(), {}
    if path is not None:
        from pipeline.params import load_params

        bench = load_params(path).bench
        settings = BenchSettings(threads=bench.threads, warmup=bench.warmup, min_iterations=bench.min_iterations,
                                 time_budget_s=bench.time_budget_s)
        profiles = dict(bench.profiles)
    if threads is not None:
        settings = replace(settings, threads=threads)  # __post_init__ validates the flag
    return settings, profiles


def _human(report: dict[str, Any], out: Path) -> str:
    device = report["device"]
    lines = [f"{out}: {len(report['models'])} model(s) on {device['device_id']} "
             f"({device['arch']}, {device['cpu_model']}{', EMULATED' if device['emulated'] else ''})"]
    for m in report["models"]:
        lat = m["latency_us"]
        verdicts = ", ".join(f"{name} {'ok' if v['met'] else 'OVER'}" for name, v in m["budgets"].items())
        lines.append(
            f"  {m['file']} ({m['kind']} v{m['version']} {m['family']}, {m['call_rows']} rows): "
            f"p50 {lat['p50']:.1f} / p99 {lat['p99']:.1f} µs, session {m['session_create_ms']:.2f} ms, "
            f"{m['peak_rss_mib']:.1f} MiB" + (f"; budgets: {verdicts}" if verdicts else "")
        )
    return "\n".join(lines)


@bench_app.command("run")
def run(
    out: Annotated[Path, typer.Option("--out", help="Where to write the report (JSON).")],
    bundle: Annotated[Path | None, typer.Option(
        "--bundle", help="A bundle: its directory or its .tar (check it first with `carryon bundle verify`).")] = None,
    models: Annotated[Path | None, typer.Option(
        "--models", help="An export dir (<name>/v<N>/model.onnx) or a dir of .onnx/.ort files.")] = None,
    device_id: Annotated[str | None, typer.Option(
        "--device-id", envvar="CARRYON_DEVICE_ID", help="A stable name for this device (required).")] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="The device profile this device belongs to (params.yaml bench.profiles).")] = None,
    params: Annotated[Path | None, typer.Option(
        "--params", help="params.yaml with bench settings and budgets (default: ./params.yaml if present).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="onnxruntime intra-op threads.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="onnx, ort or both.")] = "onnx",
    spec: Annotated[Path | None, typer.Option(
        "--spec", help="feature_spec.json for input synthesis (default: found beside the models).")] = None,
    emulated: Annotated[bool, typer.Option(
        "--emulated", help="Label the figures as emulated (qemu); emulated figures never judge budgets.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure each model on this device (one process per model) and write a bench report."""
    from features.errors import CarryonError

    if (bundle is None) == (models is None):
        raise _fail("pass exactly one of --bundle DIR or --models DIR")
    try:
        from benchmarks.device import run_bench
        from features._fsutil import atomic_write_text

        settings, profiles = _settings(params, threads)
        with tempfile.TemporaryDirectory(prefix="carryon-bench-") as tmp:
            target = _unpacked(bundle, Path(tmp)) if bundle is not None and bundle.is_file() else bundle or models
            report = run_bench([target], settings, device_id, profile, profiles,  # type: ignore[list-item]
                               fmt=fmt, emulated=True if emulated else None, spec=spec)
        atomic_write_text(out, json.dumps(report, indent=2, sort_keys=True) + "\n")
    except CarryonError as e:
        raise _fail(str(e)) from None
    typer.echo(json.dumps(report, indent=2, sort_keys=True) if as_json else _human(report, out))


def _unpacked(tar: Path, into: Path) -> Path:
    """A bundle tar's regular files, extracted with tarfile's data filter, into ``into/bundle``."""
    import tarfile

    from benchmarks.device import BenchError

    target = into / "bundle"
    try:
        with tarfile.open(tar, "r:") as archive:
            members = archive.getmembers()
            odd = [m.name for m in members if not (m.isfile() or m.isdir())]
            if odd:
                raise BenchError(f"{tar.name}: member {odd[0]!r} is not a regular file; a bundle tar holds files only")
            archive.extractall(target, members=members, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise BenchError(
            f"{tar.name}: not a readable bundle tar ({e}); pass the bundle's .tar or its directory") from None
    return target


@bench_app.command("ingest")
def ingest(
    reports: Annotated[list[Path], typer.Argument(help="Bench reports written by `carryon bench run`.")],
    params: Annotated[Path, typer.Option("--params", help="params.yaml to read (bench profiles).")] = Path(
        "params.yaml"),
    pareto_out: Annotated[Path | None, typer.Option(
        "--pareto-out", help="Also write the quality/latency Pareto data and plot per model kind here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Attach bench reports to the matching MLflow model versions (matched by the ONNX file's sha256)."""
    from features.errors import CarryonError
    from pipeline._cli_common import needs_training_stack

    try:
        from pipeline.bench_results import ingest_reports
        from pipeline.params import load_params
        from pipeline.tracking import open_tracking

        p = load_params(params)
        client = open_tracking(Path.cwd(), os.environ)
        result = ingest_reports(client, list(reports), p.bench)
        if pareto_out is not None:
            from pipeline.bench_plot import write_pareto

            metrics = {name: rule.metric for name, rule in p.select.items()}
            result["pareto"] = write_pareto(client, metrics, p.bench.target_profile, pareto_out)
    except CarryonError as e:
        raise _fail(str(e)) from None
    except ModuleNotFoundError as e:
        raise needs_training_stack(e) from None
    typer.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else _human_ingest(result))


def _human_ingest(result: dict[str, Any]) -> str:
    lines = []
    for report in result.get("reports", []):
        note = f" ({report['note']})" if report.get("note") else ""
        lines.append(f"{report.get('file')}: device {report.get('device_id')}{note}")
        for row in report.get("models", []):
            verdict = {None: "not judged", True: "within budget", False: "OVER budget"}.get(row.get("within_budget"))
            stale = ", older than the report on record: kept that one" if row.get("stale") else ""
            lines.append(f"  {row.get('registered_model')} version {row.get('version')} ({row.get('file')}): "
                         f"{verdict}{stale}")
    return "\n".join(lines) or "no reports"
