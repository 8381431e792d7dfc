"""``sendense token``: the API token shared by hub, node and CLI."""

from __future__ import annotations

import typer

from engine.api.auth import load_or_create_token
from engine.cli.common import console, settings

token_app = typer.Typer(help="The API token shared by hub, node and CLI.", no_args_is_help=True)


@token_app.command("show")
def token_show() -> None:
    """Print the API token (made on first use; give it to a remote node's node.hub_token)."""
    console.print(load_or_create_token(settings().token_path), highlight=False)
