"""What the ``carryon edge`` commands share: one-line refusals (edge code may not import pipeline/)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import typer


def fail(message: str) -> typer.Exit:
    """Print ``carryon: error: message`` on stderr; raise the returned Exit (status 1)."""
    typer.echo(f"carryon: error: {message}", err=True)
    return typer.Exit(1)


def run(call: Callable[[], dict[str, Any]], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    """Run a call; print its result; a CarryonError becomes one line on stderr and exit 1."""
    from features.errors import CarryonError

    try:
        result = call()
    except CarryonError as e:
        raise fail(str(e)) from None
    typer.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else human(result))
