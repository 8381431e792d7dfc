"""After a hub restart: follow on the jobs their node still runs, fail the others.

Exports outlive a hub on purpose (qemu-nbd runs in its own session), so a job whose
node still copies and whose exports survived goes on as if nothing happened. Queued
jobs hold no node, export or file: they stay queued, at their place, for the dispatch.
"""

from __future__ import annotations

from sqlalchemy import func, select

from engine.contract.status import ACTIVE_JOB, DiskStatus, JobStatus, NodeJobState
from engine.db.models import BackupJob
from engine.errors import SendenseError
from engine.hub.jobs.ending import finalize_now
from engine.hub.jobs.live import JobContext
from engine.hub.nodes import NodeRef, node_ref
from engine.hub.progress import DiskState, JobState
from engine.hub.verify.table import TableWriter, table_path


def reconcile(ctx: JobContext, spare: set[str] | None = None) -> list[str]:
    """Adopt surviving exports and decide every job left active; one line per job.

    The exports named in ``spare`` are not backups' (restores own them, and decide
    about them themselves): they are adopted and left running."""
    adopted, cleaned = ctx.exports.adopt()
    notes = [f"exports: {len(adopted)} adopted, {len(cleaned)} cleaned"]
    keep: set[str] = set(spare or ())
    with ctx.session() as s:
        rows = list(s.scalars(select(BackupJob).where(BackupJob.status.in_(ACTIVE_JOB))))
        found = [(_state_of(row), node_ref(s, row.node_id)) for row in rows]
        queued = s.scalar(
            select(func.count()).select_from(BackupJob).where(BackupJob.status == JobStatus.QUEUED)
        )
    if queued:
        notes.append(f"{queued} queued job(s) stay queued")
    for state, node in found:
        reason = _still_running(ctx, node, state)
        ctx.live.register(state)
        if reason is None:
            keep.update(d.export_name for d in state.disks.values())
            notes.append(f"{state.backup_id}: followed on")
        else:
            state.failure = f"hub restarted: {reason}"
            notes.append(f"{state.backup_id}: failed ({reason})")
            finalize_now(ctx, state)
    for export in ctx.exports.list():
        if export.name not in keep:
            ctx.stop_export(export.name)
    return notes


def _state_of(row: BackupJob) -> JobState:
    """The job as its rows left it: the numbers of the last flush, and the digests the
    tables already hold."""
    disks = {
        d.disk_key: DiskState(
            disk_key=d.disk_key,
            export_name=d.nbd_export_name,
            qcow2_path=d.qcow2_path,
            status=DiskStatus(d.status),
            bytes_done=d.bytes_done,
            bytes_total=d.bytes_total,
            bytes_zero=d.bytes_zero,
            digests=TableWriter(table_path(d.qcow2_path), d.bytes_total),
        )
        for d in row.disks
    }
    return JobState(backup_id=row.id, context_id=row.vm_context_id, disks=disks)


def _still_running(ctx: JobContext, node: NodeRef | None, state: JobState) -> str | None:
    """None when the job can be followed on, else why not."""
    if node is None:
        return "its node is no longer configured"
    try:
        info = ctx.node(node).status(state.backup_id)
    except SendenseError as exc:
        return str(exc)
    if info is None:
        return f"node {node.name} does not know the job"
    if info.state not in (NodeJobState.RUNNING, NodeJobState.EXITED):
        return f"node {node.name} ended it (exit code {info.exit_code}) while the hub was down"
    for disk in state.disks.values():
        if ctx.exports.get(disk.export_name) is None:
            return f"the export of disk {disk.disk_key} did not survive the restart"
    return None
