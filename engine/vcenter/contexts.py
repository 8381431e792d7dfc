"""A VM's row in ``vm_replication_contexts`` (and its ``vm_disks``), made or refreshed from
what vCenter says about it: shared by ``sendense vm add``, the hub and the lab set-up."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.inventory import VMInfo
from engine.db.models import VMDisk, VMReplicationContext


def new_context_id(vm_name: str, now: datetime | None = None) -> str:
    """The seed's ``ctx-<vm>-<YYYYMMDD-HHMMSS>``, with the name made safe for URLs and paths."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", vm_name).strip("-") or "vm"
    return f"ctx-{safe}-{stamp}"


def find_context(session: Session, vcenter_host: str, info: VMInfo) -> VMReplicationContext | None:
    """The VM's context: by moref on that vCenter, else by inventory path (a re-registered VM)."""
    for column, value in (
        (VMReplicationContext.vmware_vm_id, info.moref),
        (VMReplicationContext.vm_path, info.path),
    ):
        row = session.scalar(
            select(VMReplicationContext).where(
                VMReplicationContext.vcenter_host == vcenter_host, column == value
            )
        )
        if row is not None:
            return row
    return None


def upsert_context(
    session: Session, info: VMInfo, *, credential_id: int | None, vcenter_host: str
) -> VMReplicationContext:
    """Create or refresh the context and its disks. A disk's stored ``change_id`` is the base
    of the next incremental, so it is kept (vCenter's current one is not a restore point)."""
    ctx = find_context(session, vcenter_host, info)
    if ctx is None:
        ctx = VMReplicationContext(context_id=new_context_id(info.name), vcenter_host=vcenter_host)
        session.add(ctx)
    ctx.vm_name = info.name
    ctx.vmware_vm_id = info.moref
    ctx.vm_path = info.path
    ctx.datacenter = info.datacenter
    ctx.credential_id = credential_id
    ctx.power_state = info.power_state
    ctx.cpu_count = info.cpus
    ctx.memory_mb = info.memory_mb
    ctx.guest_os = info.guest_os
    ctx.cbt_enabled = info.cbt_enabled
    ctx.esxi_host = info.host  # where its disks are read from: the queue's per-host limit
    existing = {d.disk_key: d for d in ctx.disks}
    wanted = {d.key for d in info.disks}
    for key, row in existing.items():
        if key not in wanted:
            ctx.disks.remove(row)
    for disk in info.disks:
        row = existing.get(disk.key) or VMDisk(disk_key=disk.key)
        if disk.key not in existing:
            ctx.disks.append(row)
        row.label = disk.label
        row.capacity_bytes = disk.capacity_bytes
        row.datastore = disk.datastore
        row.vmdk_path = disk.file_name
        row.controller_key = disk.controller_key
        row.unit_number = disk.unit_number
    session.flush()
    return ctx
