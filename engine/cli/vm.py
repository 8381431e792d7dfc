"""``sendense vm``: the VMs Sendense knows (``vm_replication_contexts`` and their disks)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table
from sqlalchemy import select

from engine.cli.common import console, db_session, settings
from engine.db.models import VMReplicationContext

vm_app = typer.Typer(help="VMs to back up.", no_args_is_help=True)

MiB = 1024 * 1024


@vm_app.command("add")
def vm_add(
    vcenter: int = typer.Option(..., "--vcenter", help="The vCenter credential id."),
    path: str = typer.Option(..., "--path", help="Inventory path /DC/vm/NAME, or a moref."),
) -> None:
    """Add a VM (or refresh it: disks, power state, CBT); prints its context id."""
    from engine.vcenter import find_vm, vm_info
    from engine.vcenter.contexts import upsert_context
    from engine.vcenter.stored import connect_stored

    with db_session() as session:
        with connect_stored(session, settings().key_path, vcenter) as vc:
            info = vm_info(vc, find_vm(vc, path))
        ctx = upsert_context(session, info, credential_id=vcenter, vcenter_host=vc.host)
        disks = ", ".join(f"{d.disk_key} ({d.capacity_bytes // MiB} MiB)" for d in ctx.disks)
        console.print(ctx.context_id, highlight=False)
        console.print(f"{info.path}: {len(ctx.disks)} disks: {disks}", highlight=False)


@vm_app.command("list")
def vm_list(as_json: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """The VMs Sendense knows, with their disks."""
    with db_session() as session:
        rows = list(
            session.scalars(select(VMReplicationContext).order_by(VMReplicationContext.vm_name))
        )
        data: list[dict[str, Any]] = [
            {
                "context_id": r.context_id,
                "vm_name": r.vm_name,
                "vm_path": r.vm_path,
                "vmware_vm_id": r.vmware_vm_id,
                "vcenter_host": r.vcenter_host,
                "credential_id": r.credential_id,
                "power_state": r.power_state,
                "cbt_enabled": r.cbt_enabled,
                "disks": [
                    {
                        "disk_key": d.disk_key,
                        "capacity_bytes": d.capacity_bytes,
                        "vmdk_path": d.vmdk_path,
                        "change_id": d.change_id,
                    }
                    for d in r.disks
                ],
            }
            for r in rows
        ]
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table("context", "vm", "path", "vCenter", "cred", "power", "CBT", "disks")
    for r in data:
        disks = " ".join(f"{d['disk_key']}:{d['capacity_bytes'] // MiB}M" for d in r["disks"])
        table.add_row(
            str(r["context_id"]),
            str(r["vm_name"]),
            str(r["vm_path"]),
            str(r["vcenter_host"]),
            str(r["credential_id"] or "-"),
            str(r["power_state"] or "-"),
            "on" if r["cbt_enabled"] else "off",
            disks,
        )
    console.print(table)
