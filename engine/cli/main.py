"""The ``sendense`` command: assembles the command groups and turns errors into one line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from engine.cli.common import err_console
from engine.cli.core import config_app, db_app, keys_app
from engine.cli.exports import exports_app
from engine.cli.inventory import inventory_command
from engine.cli.lab import lab_app
from engine.cli.nbd import nbd_app
from engine.cli.repo import repo_app
from engine.cli.services import (
    backup_app,
    hub_command,
    node_command,
    nodes_app,
    run_command,
    token_app,
)
from engine.cli.tunnel import tunnel_app
from engine.cli.vcenter import vcenter_app
from engine.cli.vm import vm_app
from engine.config import get_settings
from engine.errors import SendenseError

app = typer.Typer(
    help="Sendense: back up vSphere VMs into qcow2 restore points.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(nbd_app, name="nbd")
app.add_typer(exports_app, name="exports")
app.add_typer(repo_app, name="repo")
app.add_typer(vcenter_app, name="vcenter")
app.add_typer(lab_app, name="lab")
app.add_typer(vm_app, name="vm")
app.command("inventory")(inventory_command)
app.add_typer(token_app, name="token")
app.add_typer(nodes_app, name="nodes")
app.add_typer(backup_app, name="backup")
app.command("hub")(hub_command)
app.command("node")(node_command)
app.command("run")(run_command)
app.add_typer(tunnel_app, name="tunnel")


@app.callback()
def _global(
    config: Path | None = typer.Option(
        None, "--config", help="TOML settings file (else $SENDENSE_CONFIG, /etc, ~/.config)."
    ),
) -> None:
    if config is not None:
        os.environ["SENDENSE_CONFIG"] = str(config)
        get_settings.cache_clear()


def main() -> None:
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except SendenseError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except FileNotFoundError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Click's usage errors. Typer vendors its own click (typer._click), whose classes
        # are not click's, so they are recognised by shape rather than by class.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise


if __name__ == "__main__":
    main()
