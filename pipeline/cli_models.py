"""``carryon models``: list registered versions, promote one to ``champion``, roll back.

Flags become calls of ``pipeline.registry`` and ``pipeline.promotion``; MLflow is imported inside the
commands.
A refusal is one line on stderr (``carryon: error: ...``) and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from features.errors import CarryonError
from pipeline._cli_common import JsonOpt, needs_training_stack
from pipeline._cli_common import fail as _fail

__all__ = ["models_app"]

models_app = typer.Typer(
    help="Registered models: compare versions, promote the champion, roll back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

NameArg = Annotated[str, typer.Argument(help="Registered model: cta or bonus-ranker.")]
ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read (models.promotion_floor_*).")]


def _run(call: Callable[[Any], Any], as_json: bool, human: Callable[[Any], None]) -> None:
    """Open the tracking store, run ``call(client)``, print; a CarryonError or MLflow error is one line, exit 1."""
    try:
        from mlflow.exceptions import MlflowException
    except ModuleNotFoundError as e:
        raise needs_training_stack(e) from None

    from pipeline.tracking import open_tracking

    try:
        client = open_tracking(Path.cwd(), os.environ)
        result = call(client)
    except CarryonError as e:
        raise _fail(str(e)) from None
    except MlflowException as e:
        lines = [line for line in e.message.splitlines() if line.strip()]
        raise _fail(f"MLflow: {lines[0] if lines else e.error_code}") from None
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        human(result)


def _who() -> str:
    return os.environ.get("USER") or "unknown"


@models_app.command("list")
def list_command(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show every version of a registered model with its metrics, gates and aliases."""
    from pipeline.registry import list_versions

    def call(client: Any) -> dict[str, Any]:
        return {"name": name, "versions": [row.to_dict() for row in list_versions(client, name)]}

    _run(call, as_json, _print_table)


@models_app.command("promote")
def promote_command(
    name: NameArg,
    version: Annotated[int, typer.Argument(help="Version to make the champion.", min=1)],
    force: Annotated[
        str | None, typer.Option("--force", metavar="REASON", help="Promote past a failed guard; say why.")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Point the alias `champion` at VERSION if it passed its gates and its lift's lower bound meets the floor."""
    from pipeline.promotion import MAX_REASON_CHARS, promote
    from pipeline.tracking import model_kind

    if force is not None and not 0 < len(force.strip()) <= MAX_REASON_CHARS:
        raise _fail(f"--force needs a reason of 1 to {MAX_REASON_CHARS} characters, e.g. --force 'approved by ana'")

    def call(client: Any) -> dict[str, Any]:
        from pipeline.params import load_params

        models = load_params(params).models
        floor = models.promotion_floor_bonus if model_kind(name) == "bonus" else models.promotion_floor_cta
        return promote(client, name, version, floor=floor, force_reason=force, who=_who()).to_dict()

    _run(call, as_json, _print_entry)


@models_app.command("rollback")
def rollback_command(name: NameArg, as_json: JsonOpt = False) -> None:
    """Point `champion` back at the version it had before the latest promotion (from the promotion log)."""
    from pipeline.promotion import rollback

    _run(lambda client: rollback(client, name, who=_who()).to_dict(), as_json, _print_entry)


@models_app.command("log")
def log_command(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show the promotion log of a registered model: who moved `champion`, when, from which version, why."""
    from pipeline.promotion import promotion_log

    def call(client: Any) -> dict[str, Any]:
        return {"name": name, "entries": [entry.to_dict() for entry in promotion_log(client, name)]}

    def human(result: dict[str, Any]) -> None:
        if not result["entries"]:
            typer.echo(f"{name}: no promotions yet")
        for entry in result["entries"]:
            _print_entry(entry)

    _run(call, as_json, human)


def _print_entry(entry: dict[str, Any]) -> None:
    was = "none" if entry["from_version"] is None else f"version {entry['from_version']}"
    forced = " FORCED" if entry["forced"] else ""
    why = f": {entry['reason']}" if entry["reason"] else ""
    typer.echo(
        f"#{entry['seq']} {entry['when']} {entry['who']} {entry['action']}{forced} {entry['name']}: "
        f"champion is version {entry['to_version']} (was {was}){why}"
    )


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline.registry import KEY_METRICS
    from pipeline.tracking import model_kind

    metrics = KEY_METRICS[model_kind(result["name"])]
    table = Table(title=f"registered model {result['name']}")
    for column in ("version", "aliases", "family", "gates", "created", *metrics):
        table.add_column(column, justify="right" if column in metrics or column == "version" else "left")
    for row in result["versions"]:
        values = [row["metrics"].get(m) for m in metrics]
        table.add_row(
            str(row["version"]), ", ".join(row["aliases"]), row["family"] or "", row["gates"] or "",
            row["created"][:19].replace("T", " "), *("" if v is None else f"{v:.4f}" for v in values),
        )
    if not result["versions"]:
        typer.echo(f"{result['name']}: no versions yet")
        return
    Console(width=None if sys.stdout.isatty() else 200).print(table)


if __name__ == "__main__":
    models_app()
