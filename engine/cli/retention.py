"""``sendense retention``: what the policies' retention keeps and expires, and why."""

from __future__ import annotations

import typer

retention_app = typer.Typer(help="Retention of restore points.", no_args_is_help=True)
