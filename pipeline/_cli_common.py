"""What every ``carryon`` command shares: one-line refusals and the missing-training-stack message."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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
