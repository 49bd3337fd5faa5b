"""What every ``carryon`` command shares: one-line refusals and the missing-training-stack message."""

from __future__ import annotations

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
