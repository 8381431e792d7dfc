"""``sendense restore-points``: the completed backups one can restore from, through the hub."""

from __future__ import annotations

import typer
from pydantic import TypeAdapter
from rich.table import Table

from engine.cli.common import console, on_hub
from engine.contract.restore import RestorePoint

restore_points_app = typer.Typer(
    help="Restore points: completed backups, newest first.", no_args_is_help=True
)

_POINTS = TypeAdapter(list[RestorePoint])


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _when(point: RestorePoint) -> str:
    at = point.completed_at or point.created_at
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else ""


@restore_points_app.command("list")
def points_list(
    vm: str | None = typer.Option(None, "--vm", help="Only this VM: its name or inventory path."),
    limit: int = typer.Option(200, "--limit", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Restore points, newest first, with their size, type, chain and verification."""
    points = on_hub(lambda hub: hub.restore_points(vm=vm, limit=limit))
    if as_json:
        print(_POINTS.dump_json(points, indent=2).decode())
        return
    table = Table("point", "vm", "type", "completed", "disks", "size", "chain", "state", "exports")
    for p in points:
        table.add_row(
            p.point_id,
            p.vm_name,
            p.backup_type,
            _when(p),
            " ".join(f"{d.disk_key}" for d in p.disks),
            size_text(p.size_bytes),
            str(len(p.chain)),
            p.verification,
            str(len(p.exports)) if p.exports else "",
        )
    console.print(table)


def print_point(p: RestorePoint) -> None:
    console.print(
        f"[bold]{p.point_id}[/]  {p.vm_name}  {p.backup_type}  {_when(p)}  "
        f"verification: [bold]{p.verification}[/]",
        highlight=False,
        soft_wrap=True,
    )
    lines = [
        ("vm path", p.vm_path or ""),
        ("repository", f"{p.repository_name or ''} ({p.repository_id})"),
        ("node", f"{p.node_name or ''} ({p.node_id})" if p.node_id else ""),
        ("snapshot", p.snapshot_kind or ""),
        ("chain", " <- ".join(p.chain)),
        ("size", f"{size_text(p.size_bytes)} of {size_text(p.bytes_total)}"),
        ("config", "recorded" if p.has_config else "not recorded"),
        ("exports", ", ".join(p.exports)),
        ("damage", p.verification_detail or ""),
    ]
    for label, value in lines:
        if value:
            console.print(f"{label + ':':<12}{value}", highlight=False, soft_wrap=True)
    table = Table("disk", "capacity", "file size", "qcow2", "parent")
    for d in p.disks:
        table.add_row(
            str(d.disk_key),
            size_text(d.capacity_bytes),
            size_text(d.qcow2_size_bytes) if d.qcow2_size_bytes is not None else "unreadable",
            d.qcow2_path,
            d.parent_qcow2_path or "",
        )
    console.print(table)


@restore_points_app.command("show")
def points_show(
    point: str = typer.Argument(..., help="The point's id (its backup id)."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """One restore point with its disks."""
    found = on_hub(lambda hub: hub.restore_point(point))
    if as_json:
        print(found.model_dump_json(indent=2))
        return
    print_point(found)


@restore_points_app.command("delete")
def points_delete(point: str = typer.Argument(..., help="The point's id (its backup id).")) -> None:
    """Remove a restore point's files (refused while it is exported, being restored, or
    the base of a later point)."""
    on_hub(lambda hub: hub.delete_restore_point(point))
    console.print(f"deleted {point}", highlight=False)
