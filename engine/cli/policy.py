"""``sendense policy``: scheduled backups with retention, through the hub API."""

from __future__ import annotations

import typer

policy_app = typer.Typer(
    help="Policies: scheduled backups of VMs and folders, with retention.", no_args_is_help=True
)
