"""What every ``carryon`` command shares: one-line refusals, the missing-training-stack message, the
common options and the engine choice."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

# Top-level modules of the `train` extra: a missing one means a base-only install.
TRAIN_STACK = frozenset({"polars", "pyarrow", "pandas", "duckdb", "sklearn", "lightgbm", "mlflow", "dvc"})


def fail(message: str) -> typer.Exit:
    """Print ``carryon: error: message`` on stderr; raise the returned Exit (status 1)."""
    typer.echo(f"carryon: error: {message}", err=True)
    return typer.Exit(1)


def needs_training_stack(error: ModuleNotFoundError) -> typer.Exit:
    """The refusal for a command run on a device install; re-raise errors of other modules."""
    if (error.name or "").split(".")[0] not in TRAIN_STACK:
        raise error
    return fail(
        f"this command needs the training stack (missing module {error.name!r}); "
        "install it with: pip install 'carryon[train]'"
    )


def run(call: Callable[[], dict[str, Any]], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    """Run a stage call; print its result; turn a CarryonError into one line and exit 1."""
    from features.errors import CarryonError

    try:
        result = call()
    except CarryonError as e:
        raise fail(str(e)) from None
    except ModuleNotFoundError as e:
        # Stages import the training stack lazily; a device install has only the base.
        raise needs_training_stack(e) from None
    typer.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else human(result))


ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="local (this process) or dask (the cluster in params' scale section); default: scale.engine.")]


def project_dir() -> Path:
    """The project a command works in: the current directory (MLflow's embedded store, keys, params)."""
    return Path.cwd()


def check_engine(engine: str | None) -> None:
    """Refuse an ``--engine`` other than local or dask before any work starts."""
    if engine not in (None, "local", "dask"):
        raise fail(f"--engine must be local or dask, got {engine!r}")


def engine_client(engine: str | None, scale: Any) -> Any:
    """A context giving None (local engine) or a Dask client (``features._dask``; dask imported only then)."""
    from features._dask import DaskSettings
    from features._dask import engine_client as dask_engine_client

    settings = DaskSettings(scale.scheduler, scale.workers, scale.threads_per_worker)
    return dask_engine_client(engine or scale.engine, settings)
