"""``carryon edge``: the edge node's commands (base dependencies only, stages imported lazily)."""

from __future__ import annotations

import typer

edge_app = typer.Typer(help="Pull, verify, install and run signed bundles on an edge node.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Mount ``carryon edge`` on the main app."""
    from edge import cli_client, cli_runtime

    cli_client.register(edge_app)
    cli_runtime.register(edge_app)
    app.add_typer(edge_app, name="edge")
