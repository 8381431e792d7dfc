"""``sendense vm``: the VMs Sendense knows (``vm_replication_contexts`` and their disks)."""

from __future__ import annotations

import typer
from pydantic import TypeAdapter
from rich.table import Table
from sqlalchemy import select

from engine.cli.common import console, db_session, settings
from engine.contract.hub import VMContext
from engine.db.models import VMReplicationContext
from engine.errors import NotFound

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


@vm_app.command("enable-cbt")
def vm_enable_cbt(
    path: str = typer.Argument(..., help="The VM's inventory path, /DC/vm/NAME."),
    vcenter: int | None = typer.Option(
        None, "--vcenter", help="Add the VM first, through this vCenter credential id."
    ),
) -> None:
    """Turn changed block tracking on (a VM without it gets full backups only), then
    refresh its context; refused while the VM has snapshots."""
    from engine.hub.jobs.refresh import refresh_context
    from engine.vcenter import find_vm, vm_info
    from engine.vcenter.contexts import upsert_context
    from engine.vcenter.stored import connect_stored

    with db_session() as session:
        ctx = session.scalar(
            select(VMReplicationContext).where(VMReplicationContext.vm_path == path)
        )
        if ctx is None and vcenter is None:
            raise NotFound(
                f"VM {path} has no context: add it first: "
                f"sendense vm add --vcenter ID --path {path} (or give --vcenter)"
            )
        if ctx is None:
            assert vcenter is not None
            with connect_stored(session, settings().key_path, vcenter) as vc:
                info = vm_info(vc, find_vm(vc, path))
            ctx = upsert_context(session, info, credential_id=vcenter, vcenter_host=vc.host)
        ctx = refresh_context(session, settings().key_path, ctx, enable_cbt=True)
        state = "on" if ctx.cbt_enabled else "still off"
        console.print(f"{ctx.context_id}: CBT is {state} for {ctx.vm_path}", highlight=False)


@vm_app.command("list")
def vm_list(as_json: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """The VMs Sendense knows, with their disks: GET /vms's shape, without last backups
    (see `sendense backup list`)."""
    from engine.hub.views import context_view

    with db_session() as session:
        rows = session.scalars(select(VMReplicationContext).order_by(VMReplicationContext.vm_name))
        vms = [context_view(r, []) for r in rows]
    if as_json:
        print(_VM_LIST.dump_json(vms, indent=2).decode())
        return
    table = Table("context", "vm", "path", "vCenter", "cred", "power", "CBT", "disks")
    for vm in vms:
        table.add_row(
            vm.context_id,
            vm.vm_name,
            vm.vm_path,
            vm.vcenter_host,
            str(vm.credential_id or "-"),
            vm.power_state or "-",
            "on" if vm.cbt_enabled else "off",
            " ".join(f"{d.disk_key}:{d.capacity_bytes // MiB}M" for d in vm.disks),
        )
    console.print(table)


_VM_LIST = TypeAdapter(list[VMContext])
