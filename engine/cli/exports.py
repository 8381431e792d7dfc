"""``sendense exports``: the qemu-nbd exports the hub keeps, for an operator to inspect.

The hub owns the exports; these commands read the same state files, so they work with the
hub running or not (after a crash, ``stop`` cleans up what is left).
"""

from __future__ import annotations

import typer
from rich.table import Table

from engine.cli.common import console, settings
from engine.hub.exports.manager import ExportError, ExportManager

exports_app = typer.Typer(help="qemu-nbd exports (NBD targets of running backups).")


@exports_app.command("list")
def exports_list() -> None:
    """Show every export: name, URI, pid, image, and whether its qemu-nbd is alive."""
    manager = ExportManager.from_settings(settings())
    table = Table("name", "uri", "pid", "image", "state")
    for export in manager.list():
        try:
            manager.check(export.name)
            state = "running"
        except ExportError as exc:
            state = f"dead: {exc}"
        table.add_row(export.name, export.uri, str(export.pid), str(export.qcow2_path), state)
    console.print(table)


@exports_app.command("stop")
def exports_stop(
    name: str = typer.Argument(..., help="The export name `exports list` shows."),
) -> None:
    """Stop one export (SIGTERM, then SIGKILL) and free its port; safe to repeat."""
    ExportManager.from_settings(settings()).stop(name)
    console.print(f"stopped {name}", highlight=False)
