"""``sendense config``, ``db`` and ``keys``: the data folder's own housekeeping."""

from __future__ import annotations

import json

import typer

from engine.cli.common import console, db_session, settings
from engine.credentials import VMwareCredentialService
from engine.db.session import current_revision, upgrade

config_app = typer.Typer(help="Show the settings in force.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="The master key that seals vCenter passwords.", no_args_is_help=True)


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the settings in force (file, environment, defaults), secrets masked."""
    data = settings().masked()
    if as_json:
        console.print_json(json.dumps(data))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subval in value.items():
                console.print(f"{key}.{sub} = {subval}", highlight=False)
        else:
            console.print(f"{key} = {value}", highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to the newest schema (safe to run any number of times)."""
    url = settings().db_url
    upgrade(url)
    console.print(f"database at revision {current_revision(url)}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-seal every stored vCenter password under a new master key, all or nothing."""
    with db_session() as session:
        count = VMwareCredentialService(session, settings().key_path).rotate()
    console.print(f"re-sealed {count} credential(s) under a new master key")
