"""After a hub restart: VM restores left active are failed and cleaned, never followed on.

A restore's setup and end run in the hub (CreateVM, the overwrite, the power-on), so a
hub that died mid-way cannot know which of them happened. The safe end is the failure
path: stop the node's client, stop the exports, remove the VM the restore created —
unless every disk was already recorded as written, in which case the VM is whole (its
overwrite or power-on may be what was cut short) and it is kept and named.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.contract.status import DiskStatus, JobStatus, NodeJobState, RestoreKind
from engine.db.models import BackupJob, VMReplicationContext
from engine.db.models import RestoreJob as RestoreRow
from engine.errors import SendenseError, VMNotFound
from engine.hub.jobs.ending import CANCEL_WAIT_SECONDS
from engine.hub.jobs.live import JobContext, log
from engine.hub.nodes import NodeClient, NodeRef, node_ref
from engine.hub.restores.store import RestoreStore
from engine.vcenter import destroy_vm, find_vm
from engine.vcenter.stored import connect_stored

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Leftover:
    restore_id: str
    node: NodeRef | None
    vm_moref: str | None
    vm_path: str | None
    exports: tuple[str, ...]
    whole: bool  # every disk recorded as written
    credential_id: int | None


def reconcile_vm_restores(ctx: JobContext, store: RestoreStore) -> list[str]:
    """Fail every active VM restore, cleaning what it made; one line per restore."""
    with ctx.session() as s:
        found = []
        for row in store.active_rows(s):
            if row.kind != RestoreKind.VM:
                continue
            point = s.get(BackupJob, row.backup_job_id)
            vm = s.get(VMReplicationContext, point.vm_context_id) if point else None
            found.append(
                Leftover(
                    restore_id=row.id,
                    node=node_ref(s, row.node_id),
                    vm_moref=row.vm_moref,
                    vm_path=row.vm_path,
                    exports=tuple(d.export_name for d in row.disks if d.export_name),
                    whole=bool(row.disks)
                    and all(d.status == DiskStatus.COMPLETED for d in row.disks),
                    credential_id=vm.credential_id if vm else None,
                )
            )
    notes = []
    for left in found:
        reason = "the hub restarted while the restore ran"
        if left.node is not None:
            problem = _stop_client(ctx.node(left.node), left.restore_id)
            if problem:
                reason += f"; {problem}"
        for name in left.exports:
            ctx.stop_export(name)
        if left.whole:
            reason += f"; its disks were all written: VM {left.vm_path} is kept"
        else:
            problem = _remove(ctx, left)
            if problem:
                reason += f"; {problem}"
        with ctx.session() as s:
            ended = s.get(RestoreRow, left.restore_id)
            for d in ended.disks if ended else ():
                if d.status != DiskStatus.COMPLETED:
                    d.status = DiskStatus.FAILED
        store.finish(left.restore_id, JobStatus.FAILED, reason)
        notes.append(f"{left.restore_id}: failed ({reason})")
    return notes


def _stop_client(node: NodeClient, restore_id: str) -> str | None:
    """Cancel the node's client and wait (a while) for it to end: its disks must not be
    written while its VM is removed. What went wrong, if anything."""
    try:
        node.cancel(restore_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while (info := node.status(restore_id)) is not None and info.state == NodeJobState.RUNNING:
            if time.monotonic() > deadline:
                return f"node {node.node.name} still runs its client"
            time.sleep(POLL_SECONDS)
    except SendenseError as exc:
        return f"node {node.node.name} could not be told to stop: {exc}"
    return None


def _remove(ctx: JobContext, left: Leftover) -> str | None:
    """Remove the VM the restore made (by moref; by its path if the hub died while
    vCenter made it); None when there is none left, else what to tell."""
    if left.vm_moref is None and left.vm_path is None:
        return None
    what = left.vm_path or left.vm_moref
    if left.credential_id is None:
        return f"the VM {what} it created could not be removed: no vCenter credential"
    try:
        with ctx.session() as s:
            vc = connect_stored(s, ctx.settings.key_path, left.credential_id)
        with vc:
            moref = left.vm_moref
            if moref is None:
                assert left.vm_path is not None
                try:
                    moref = find_vm(vc, left.vm_path)._moId
                except VMNotFound:
                    return None  # vCenter never made it
            destroy_vm(vc, moref)
    except SendenseError as exc:
        log.error("restore %s: VM %s is left behind: %s", left.restore_id, what, exc)
        return f"the VM {what} it created could not be removed: {exc}"
    return None
