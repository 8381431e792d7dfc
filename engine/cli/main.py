"""The ``sendense`` command: assembles the command groups and turns errors into one line."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import typer
from pydantic import ValidationError

from engine.cli.common import err_console
from engine.config import describe_errors, get_settings
from engine.errors import BadInput, SendenseError

# Every command, by name: (module, attribute). A Typer attribute is a group, anything
# else a single command. Only the module of the command being run is imported, so that
# `sendense nbd copy` does not pay for loading the hub, the tunnel and the database.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("engine.cli.core", "config_app"),
    "db": ("engine.cli.core", "db_app"),
    "keys": ("engine.cli.core", "keys_app"),
    "nbd": ("engine.cli.nbd", "nbd_app"),
    "exports": ("engine.cli.exports", "exports_app"),
    "repo": ("engine.cli.repo", "repo_app"),
    "vcenter": ("engine.cli.vcenter", "vcenter_app"),
    "lab": ("engine.cli.lab", "lab_app"),
    "vm": ("engine.cli.vm", "vm_app"),
    "inventory": ("engine.cli.inventory", "inventory_command"),
    "token": ("engine.cli.token", "token_app"),
    "nodes": ("engine.cli.nodes", "nodes_app"),
    "backup": ("engine.cli.backup", "backup_app"),
    "restore-points": ("engine.cli.restore_points", "restore_points_app"),
    "chain": ("engine.cli.chain", "chain_app"),
    "policy": ("engine.cli.policy", "policy_app"),
    "retention": ("engine.cli.retention", "retention_app"),
    "restore": ("engine.cli.restore", "restore_app"),
    "verify": ("engine.cli.verify", "verify_command"),
    "hub": ("engine.cli.serve", "hub_command"),
    "node": ("engine.cli.serve", "node_command"),
    "run": ("engine.cli.launcher", "run_command"),
    "stop": ("engine.cli.launcher", "stop_command"),
    "tunnel": ("engine.cli.tunnel", "tunnel_app"),
}

# The exit codes are a contract for scripts: engine/errors.py, docs/contracts.md.
EXIT_CODES = (
    "Exit codes: 0 done, 1 internal error, 2 bad input, 3 vCenter error, 4 snapshot error, "
    "5 copy error, 6 disk source error, 7 not found, 8 conflict, 9 token refused, "
    "10 a service unreachable, 11 refused by the service behind the hub, 12 too little space, "
    "13 a damaged restore point, 130 cancelled. "
    "backup start --wait: 0 completed, 1 failed, 130 cancelled."
)

app = typer.Typer(
    help="Sendense: back up vSphere VMs into qcow2 restore points.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _requested(argv: list[str]) -> list[str]:
    """The command named on the command line, or every command (for help and errors)."""
    args = iter(argv)
    for arg in args:
        if arg == "--config":
            next(args, None)
        elif arg.startswith("-"):
            continue
        else:
            return [arg] if arg in COMMANDS else list(COMMANDS)
    return list(COMMANDS)


def register(names: list[str]) -> None:
    for name in names:
        module, attribute = COMMANDS[name]
        target = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)


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
    register(_requested(sys.argv[1:]))
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except SendenseError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except ValidationError as exc:  # a contract model refused the command's input
        err_console.print(f"error: {describe_errors(exc)}", highlight=False, soft_wrap=True)
        sys.exit(BadInput.exit_code)
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
