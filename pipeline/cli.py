"""The ``carryon`` command: one sub-command per pipeline stage.

Each sub-command translates flags into a call of one stage function and imports that
stage lazily, so device commands run with only the base dependencies installed.
Every refusal is one line on stderr and exit status 1; ``--json`` prints the result
for machines.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pipeline._cli_common import EngineOpt, JsonOpt, ParamsOpt, QuietOpt
from pipeline._cli_common import check_engine as _check_engine
from pipeline._cli_common import engine_client as _engine_client
from pipeline._cli_common import fail as _fail
from pipeline._cli_common import project_dir as _project_dir
from pipeline._cli_common import run as _run

app = typer.Typer(
    name="carryon",
    help="Personalization models that travel with the creator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _dask_map(client: Any) -> Any:
    from features._dask import dask_map

    return dask_map(client)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Directory for events and catalog.json.")] = Path("data/raw"),
    fmt: Annotated[str, typer.Option("--format", help="parquet or jsonl.")] = "parquet",
    scale: Annotated[float | None, typer.Option(help="Override simulate.scale (1.0 ~ 1M events).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override simulate.seed.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Simulate consented live-drop events (schema v1) and the creators' catalog."""
    if fmt not in ("parquet", "jsonl"):
        raise _fail(f"--format must be parquet or jsonl, got {fmt!r}")
    file_format: Literal["parquet", "jsonl"] = "jsonl" if fmt == "jsonl" else "parquet"

    def call() -> dict[str, Any]:
        from dataclasses import replace

        from features.simulate import simulate as run
        from pipeline.params import load_params
        from pipeline.progress import progress_bars

        config = load_params(params).simulate
        if scale is not None:
            config = replace(config, scale=scale)
        if seed is not None:
            config = replace(config, seed=seed)
        with progress_bars(not quiet) as progress:
            return run(config, out, fmt=file_format, progress=progress).to_dict()

    _run(call, as_json, lambda r: f"simulated {r['events']:,} events in {out}")


@app.command()
def ingest(
    sources: Annotated[list[Path] | None, typer.Argument(help="JSONL/Parquet files or directories.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output directory [default: data/clean, with --log data/bandit].")] = None,
    quarantine: Annotated[Path | None, typer.Option(
        help="Quarantine file, raw zone [default: data/raw/quarantine.jsonl, with --log "
             "data/raw/bandit_quarantine.jsonl].")] = None,
    report: Annotated[Path | None, typer.Option(
        help="JSON report [default: metrics/ingest.json, with --log metrics/bandit_import.json].")] = None,
    log: Annotated[Path | None, typer.Option(
        "--log", help="Import an external logged-bandit table (CSV/Parquet) instead of events.")] = None,
    consent_column: Annotated[str | None, typer.Option(help="--log: column saying whether each row consented.")] = None,
    consent_basis: Annotated[str | None, typer.Option(help="--log: the consent basis of the whole log.")] = None,
    reuse_spec: Annotated[Path | None, typer.Option(help="--log: encode with this bandit_spec.json.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = None,
) -> None:
    """Validate, deduplicate, consent-filter and pseudonymize raw events (or, with --log, a bandit log)."""
    _check_engine(engine)
    if log is not None:
        if sources:
            raise _fail("give either event sources or --log, not both")
        _ingest_log(log, out or Path("data/bandit"), quarantine or Path("data/raw/bandit_quarantine.jsonl"),
                    report or Path("metrics/bandit_import.json"), consent_column, consent_basis, reuse_spec,
                    params, as_json)
        return
    inputs = sources or [Path("data/raw/events.parquet")]
    out = out or Path("data/clean")
    quarantine = quarantine or Path("data/raw/quarantine.jsonl")
    report = report or Path("metrics/ingest.json")

    def call() -> dict[str, Any]:
        from features._fsutil import atomic_write_text
        from features.ingest import ingest as run
        from features.ingest import resolve_key
        from pipeline.params import load_params
        from pipeline.progress import progress_bars

        p = load_params(params)
        key = resolve_key(p.ingest, _project_dir(), os.environ)
        with _engine_client(engine, p.scale) as client, progress_bars(not quiet) as progress:
            partition_map = None if client is None else _dask_map(client)
            result = run(inputs, out, quarantine, p.ingest, p.consent, key=key, progress=progress,
                         partition_map=partition_map)
        data = result.to_dict()
        atomic_write_text(report, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return data

    def human(r: dict[str, Any]) -> str:
        lines = [
            f"read {r['records_read']:,}: clean {r['clean']:,}, quarantined {r['quarantined']:,}, "
            f"duplicates {r['duplicates']:,}, excluded (no consent) {r['excluded_no_consent']:,}",
        ]
        key = r["pseudonym_key"]
        if key["source"] == "dev-key":
            lines.append(f"note: pseudonymized with a local development key ({key['path']}); "
                         "set CARRYON_PSEUDONYM_KEY_FILE in production")
        return "\n".join(lines)

    _run(call, as_json, human)


def _ingest_log(log: Path, out: Path, quarantine: Path, report: Path, consent_column: str | None,
                consent_basis: str | None, reuse_spec: Path | None, params: Path, as_json: bool) -> None:
    def call() -> dict[str, Any]:
        from features._fsutil import atomic_write_text
        from features.bandit import import_bandit_log
        from features.ingest import resolve_key
        from pipeline.params import load_params

        key = resolve_key(load_params(params).ingest, _project_dir(), os.environ)
        result = import_bandit_log(log, out, quarantine, key=key, consent_column=consent_column,
                                   consent_basis=consent_basis, reuse_spec=reuse_spec).to_dict()
        atomic_write_text(report, json.dumps(result, indent=2, sort_keys=True) + "\n")
        return result

    _run(call, as_json, lambda r: f"imported {r['clean']:,} of {r['records_read']:,} logged decisions into {out}")


@app.command()
def evaluate(
    log: Annotated[Path, typer.Option("--log", help="Imported bandit log directory.")] = Path("data/bandit"),
    policy: Annotated[str, typer.Option(help="uniform, or a registered model: models:/NAME/VERSION.")] = "uniform",
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Estimate a CTA policy's value on a logged-bandit table: IPS, SNIPS and DR with intervals."""

    def call() -> dict[str, Any]:
        from models.bandit import evaluate_on_log, load_policy_model
        from pipeline.params import load_params

        p = load_params(params)
        target: Any = "uniform"
        if policy != "uniform":
            from pipeline.tracking import open_tracking

            open_tracking(_project_dir(), os.environ)
            target = load_policy_model(policy, log)
        result = evaluate_on_log(log, target, p.policy.exploration, p.evaluation, config=p.train)
        return {"policy": policy, **result.to_metrics()}

    _run(call, as_json, lambda r: "\n".join(f"{k}: {v:.5f}" for k, v in sorted(r.items()) if k != "policy"))


@app.command()
def features(
    clean: Annotated[Path, typer.Option(help="Clean events directory (from ingest).")] = Path("data/clean"),
    catalog: Annotated[Path, typer.Option(help="Creators' catalog.")] = Path("data/raw/catalog.json"),
    out: Annotated[Path, typer.Option(help="Directory for feature tables and spec.")] = Path(
        "data/features"
    ),
    report: Annotated[Path, typer.Option(help="Where to write the JSON summary.")] = Path(
        "metrics/features.json"
    ),
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = None,
) -> None:
    """Build point-in-time CTA and bonus-ranking feature tables and the feature spec."""
    _check_engine(engine)

    def call() -> dict[str, Any]:
        from features._fsutil import atomic_write_text
        from features.batch import build_features
        from pipeline.params import load_params
        from pipeline.progress import progress_bars

        p = load_params(params)
        with _engine_client(engine, p.scale) as client, progress_bars(not quiet) as progress:
            partition_map = None if client is None else _dask_map(client)
            data = build_features(clean, catalog, out, p.features, progress=progress,
                                  partition_map=partition_map).to_dict()
        atomic_write_text(report, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return data

    _run(call, as_json, lambda r: f"feature tables written to {out} (spec {r['spec_hash'][:12]})")


def _mount_models() -> None:
    from pipeline.cli_models import models_app

    app.add_typer(models_app, name="models")


_mount_models()


def _mount_device_and_release() -> None:
    # Each module imports its stage inside its commands, so mounting costs only typer.
    from edge import cli as edge_cli
    from pipeline import cli_bench, cli_bundle, cli_publish

    for module in (cli_bench, cli_bundle, cli_publish, edge_cli):
        module.register(app)


_mount_device_and_release()


def _mount_train() -> None:
    from pipeline import cli_train

    cli_train.register(app)


_mount_train()

@app.command("export")
def export_command(
    train_reports: Annotated[list[Path] | None, typer.Option(
        "--train-report", help="Training reports naming the versions to export.")] = None,
    features_dir: Annotated[Path, typer.Option("--features", help="Feature tables directory.")] = Path(
        "data/features"
    ),
    out: Annotated[Path, typer.Option(help="Directory for the exported models.")] = Path("data/export"),
    report: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = Path("metrics/export.json"),
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export each trained candidate to ONNX (+ int8, ORT), check parity, tag its gates in MLflow."""
    reports = train_reports or [Path("metrics/train_cta.json"), Path("metrics/train_bonus.json")]

    def call() -> dict[str, Any]:
        from export.stage import export_versions
        from features._fsutil import atomic_write_text
        from features.errors import InputUnreadableError
        from pipeline.params import load_params
        from pipeline.progress import progress_bars
        from pipeline.tracking import open_tracking

        versions = []
        for path in reports:
            try:
                trained = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise InputUnreadableError(f"{path}: cannot read the training report ({e}); run `carryon train`") from e
            versions += [(c["name"], int(c["version"])) for c in trained["candidates"]]
        p = load_params(params)
        client = open_tracking(_project_dir(), os.environ)
        with progress_bars(not quiet) as progress:
            results = export_versions(client, versions, features_dir, out, p.train.test_fraction, progress=progress)
        data = {"versions": [r.to_dict() for r in results],
                "gates": {f"{r.name}-v{r.version}": {"passed": r.passed, **{g: v["value"] for g, v in r.gates.items()},
                                                     **r.sizes} for r in results}}
        atomic_write_text(report, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return data

    _run(call, as_json, lambda r: "\n".join(
        f"{v['name']} v{v['version']} ({v['family']}): gates {'passed' if v['passed'] else 'FAILED'}"
        for v in r["versions"]))


@app.command()
def select(
    report: Annotated[Path, typer.Option(help="Where to write the JSON result.")] = Path("metrics/select.json"),
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Set the MLflow alias `candidate` on the version each registered model's rule picks."""

    def call() -> dict[str, Any]:
        from features._fsutil import atomic_write_text
        from pipeline.bench_results import budget_check
        from pipeline.params import load_params
        from pipeline.registry import SelectRule, gates_passed, select_candidate
        from pipeline.tracking import open_tracking

        p = load_params(params)
        within_budget = budget_check(p.bench)  # budgets act through ingested bench reports only
        client = open_tracking(_project_dir(), os.environ)
        results = {}
        for name, rule in p.select.items():
            limits = {metric: (side, bound) for metric, side, bound in rule.limits}
            checks = ((gates_passed,) if rule.require_export else ()) + (within_budget,)
            result = select_candidate(client, name, SelectRule(rule.metric, limits, checks))  # type: ignore[arg-type]
            if result.warning:
                typer.echo(f"carryon: warning: {result.warning}", err=True)
            results[name] = result.to_dict()
        atomic_write_text(report, json.dumps(results, indent=2, sort_keys=True) + "\n")
        return results

    _run(call, as_json, lambda r: "\n".join(f"{n}: candidate is version {v['candidate']}" for n, v in r.items()))


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Directory for the HTML pages.")] = Path("reports"),
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Write the creator report: one HTML page per registered model, also logged to MLflow."""

    def call() -> dict[str, Any]:
        from pipeline.params import load_params
        from pipeline.report import write_reports
        from pipeline.tracking import open_tracking

        names = list(load_params(params).select)
        return write_reports(open_tracking(_project_dir(), os.environ), names, out).to_dict()

    _run(call, as_json, lambda r: "\n".join(f"report for {x['name']}: {out / x['file']}" for x in r["reports"]))


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("carryon: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
