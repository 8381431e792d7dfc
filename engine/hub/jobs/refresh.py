"""A VM context read again from vCenter, as ``POST /vms`` does: an incremental's plan
must see a disk added or grown since the context was last refreshed, and turning CBT
on changes what the context says."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from engine.db.models import VMReplicationContext
from engine.errors import BadInput


def refresh_context(
    s: Session, key_path: Path, ctx: VMReplicationContext, *, enable_cbt: bool = False
) -> VMReplicationContext:
    """The context with vCenter's disks, power and CBT state (after turning CBT on, when
    asked), through the context's own stored login."""
    from engine.vcenter import find_vm, vm_info
    from engine.vcenter.cbt import enable_cbt as turn_on_cbt
    from engine.vcenter.contexts import upsert_context
    from engine.vcenter.stored import connect_stored

    if ctx.credential_id is None:
        raise BadInput(f"VM context {ctx.context_id} has no vCenter credential")
    credential_id, host = ctx.credential_id, ctx.vcenter_host
    with connect_stored(s, key_path, credential_id) as vc:
        vm = find_vm(vc, ctx.vm_path)
        if enable_cbt:
            turn_on_cbt(vc, vm)
        info = vm_info(vc, vm)
    return upsert_context(s, info, credential_id=credential_id, vcenter_host=host)
