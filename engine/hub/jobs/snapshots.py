"""A failed backup's VMware snapshot, removed by the hub: the client removes its own
snapshot whatever ends its run, but not when it is killed (SIGKILL, the node's machine
gone), and a snapshot left on a VM grows its delta disks until someone notices."""

from __future__ import annotations

from sqlalchemy.orm import Session

from engine.db.models import VMReplicationContext
from engine.hub.jobs.live import JobContext, log


def remove_job_snapshot(ctx: JobContext, backup_id: str, context_id: str) -> None:
    """Remove the job's ``sendense-<backup_id>`` snapshot if it is still there.

    Best effort: a vCenter that cannot be reached now leaves it to the VM's next backup,
    whose client removes every leftover Sendense snapshot before it takes its own.
    """
    with ctx.session() as s:
        try:
            name = _remove(s, ctx, backup_id, context_id)
        except Exception as exc:  # whatever vCenter said, the job's end goes on
            log.warning(
                "backup %s: its snapshot could not be checked for (%s); the VM's next "
                "backup removes it if it is left",
                backup_id,
                exc,
            )
            return
    if name:
        log.info("backup %s: removed the snapshot %s its client left behind", backup_id, name)


def _remove(s: Session, ctx: JobContext, backup_id: str, context_id: str) -> str | None:
    from engine.vcenter import find_vm, list_snapshots, remove_snapshot
    from engine.vcenter.snapshots import PREFIX
    from engine.vcenter.stored import connect_stored

    row = s.get(VMReplicationContext, context_id)
    if row is None or row.credential_id is None:
        return None
    wanted = f"{PREFIX}{backup_id}"
    with connect_stored(s, ctx.settings.key_path, row.credential_id) as vc:
        vm = find_vm(vc, row.vm_path)
        for node in list_snapshots(vc, vm):
            if node.name == wanted:
                remove_snapshot(vc, node.snapshot)
                return wanted
    return None
