"""Ending a backup: its outcome, the checks on its files, the rows, and cancelling it.

A job completes only when every disk reported ``disk_done``, the client said ``done
completed`` and the node saw it exit 0; the qcow2 files must then pass ``qemu-img
check`` (a disk copied whole into an incremental's overlay is first made to stand
alone). Anything else fails it with the reason, and the files of a failed restore point
are removed, so a bad restore point is never there to be used.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.hub import Job
from engine.contract.status import BackupType, DiskStatus, JobStatus
from engine.db.models import BackupJob, VMDisk, utcnow
from engine.errors import Conflict
from engine.hub.exports.errors import ExportError
from engine.hub.jobs.live import JobContext, log
from engine.hub.jobs.snapshots import remove_job_snapshot
from engine.hub.nodes import NodeUnreachable
from engine.hub.progress import DiskState, JobState
from engine.hub.queue import store as queue
from engine.hub.verify.table import remove_table

CANCEL_WAIT_SECONDS = 20.0


def finalize_soon(ctx: JobContext, state: JobState) -> None:
    """End the job in a thread of its own (its exports stop, its files are checked)."""
    if ctx.live.begin_end(state):
        threading.Thread(
            target=finalize, args=(ctx, state), name=f"finalize-{state.backup_id}", daemon=True
        ).start()


def finalize_now(ctx: JobContext, state: JobState) -> None:
    """End the job here and now, unless it is already ending."""
    if ctx.live.begin_end(state):
        finalize(ctx, state)


def dead_export(ctx: JobContext, state: JobState) -> str | None:
    """Why the job's first dead qemu-nbd export died, in qemu-nbd's words; None if all live."""
    for disk in state.disks.values():
        try:
            ctx.exports.check(disk.export_name)
        except ExportError as exc:
            return f"disk {disk.disk_key}: qemu-nbd export {disk.export_name} died: {exc}"
    return None


def finalize(ctx: JobContext, state: JobState) -> None:
    """End a job whose client exited (or that the hub gave up on); the caller marked it
    as ending (``LiveJobs.begin_end``)."""
    with ctx.live.lock:
        status, reason = state.outcome()
    if status == JobStatus.FAILED and state.failure is None:
        # The client may see a dead export (its writes fail) before the watch does: the
        # operator reads qemu-nbd's own message, not the client's "disconnected".
        death = dead_export(ctx, state)
        if death is not None:
            log.info("backup %s: the client said: %s", state.backup_id, reason)
            reason = death
    for disk in state.disks.values():
        ctx.stop_export(disk.export_name)
    sizes: dict[int, int] = {}
    if status == JobStatus.COMPLETED:
        for disk in state.disks.values():
            problem = standalone(ctx.settings.nbd.qemu_img, disk)
            problem = problem or qcow2_check(ctx.settings.nbd.qemu_img, Path(disk.qcow2_path))
            if problem:
                status, reason = JobStatus.FAILED, f"disk {disk.disk_key}: {problem}"
                break
            sizes[disk.disk_key] = Path(disk.qcow2_path).stat().st_size
    for disk in state.disks.values():
        if disk.digests is not None:
            disk.digests.close(sync=status == JobStatus.COMPLETED)
    if status != JobStatus.COMPLETED:
        for disk in state.disks.values():
            remove_restore_point(Path(disk.qcow2_path))
    with ctx.db_lock, ctx.session() as s:
        row = s.get(BackupJob, state.backup_id)
        if row is not None:
            _record_end(s, row, state, status, reason, sizes)
    log.info("backup %s %s%s", state.backup_id, status, f": {reason}" if reason else "")
    for disk in state.disks.values():
        ctx.bus.publish(disk.to_event(state.backup_id))
    ctx.live.forget(state.backup_id)
    ctx.publish_job(state.backup_id)
    ctx.ended(state.backup_id)
    if status != JobStatus.COMPLETED:
        # Last, once the end is recorded: a vCenter slow to answer delays nothing else.
        remove_job_snapshot(ctx, state.backup_id, state.context_id)


def _record_end(
    s: Session,
    row: BackupJob,
    state: JobState,
    status: JobStatus,
    reason: str | None,
    sizes: dict[int, int],
) -> None:
    row.status = status
    row.error_message = reason
    row.completed_at = utcnow()
    row.snapshot_kind = state.snapshot_kind or row.snapshot_kind
    completed = status == JobStatus.COMPLETED
    for d in row.disks:
        live = state.disks.get(d.disk_key)
        if live is None:
            continue
        d.bytes_done, d.bytes_zero, d.bytes_total = (
            live.bytes_done,
            live.bytes_zero,
            live.bytes_total,
        )
        d.error_message = live.error
        # On a failed or cancelled job every disk takes its status: its restore point is
        # deleted with the job's.
        live.status = DiskStatus.COMPLETED if completed else DiskStatus(status)
        d.status = live.status
        d.backup_mode, d.fallback_reason = live.mode, live.fallback_reason
        d.parent_qcow2_path = live.parent_qcow2_path
        if completed:
            d.change_id = live.change_id
            d.qcow2_size_bytes = sizes.get(d.disk_key)
    row.bytes_transferred = sum(d.bytes_done for d in row.disks)
    if all(d.backup_mode != BackupType.INCREMENTAL for d in row.disks):
        row.backup_type, row.parent_backup_id = BackupType.FULL, None
    if completed:
        by_key = {d.disk_key: d.change_id for d in row.disks}
        for vd in s.scalars(select(VMDisk).where(VMDisk.vm_context_id == row.vm_context_id)):
            if vd.disk_key in by_key:
                vd.change_id = by_key[vd.disk_key]


def cancel(ctx: JobContext, backup_id: str) -> Job:
    """A queued job is cancelled at once (no node has it); a running one: ask the node
    to stop the job's client, and answer once it ended (or after a while)."""
    with ctx.session() as s:
        dequeued = queue.cancel(s, backup_id)
    if dequeued:
        log.info("backup %s cancelled in the queue", backup_id)
        ctx.publish_job(backup_id)
        ctx.ended(backup_id)
        return ctx.job(backup_id)
    state, done = ctx.live.get(backup_id), ctx.live.done_event(backup_id)
    if state is None or done is None:
        current = ctx.job(backup_id)  # 404 when unknown
        raise Conflict(f"backup {backup_id} is not running (status {current.status})")
    state.cancel_requested = True
    node = ctx.node_of(backup_id)
    try:
        if node is not None:
            ctx.node(node).cancel(backup_id)
    except NodeUnreachable:
        state.cancel_requested = False
        raise
    done.wait(CANCEL_WAIT_SECONDS)
    return ctx.job(backup_id)


def remove_restore_point(path: Path) -> None:
    """Delete a qcow2 that is not a good restore point (its digest table with it), and
    its folders if now empty."""
    path.unlink(missing_ok=True)
    remove_table(path)
    for folder in (path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break


def standalone(qemu_img: str, disk: DiskState) -> str | None:
    """A disk the client copied whole into its overlay (its mode fell back to full) no
    longer needs its parent: ``qemu-img rebase -b ""`` in safe mode folds in whatever
    the overlay does not hold (nothing, as the client wrote every block) and drops the
    backing file, so the point stands alone. None when done, else what went wrong."""
    if disk.mode != BackupType.FULL or disk.parent_qcow2_path is None:
        return None
    proc = subprocess.run(
        [qemu_img, "rebase", "-q", "-f", "qcow2", "-b", "", disk.qcow2_path],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout).strip().splitlines()
        return f"qemu-img rebase failed (exit {proc.returncode}): {text[-1] if text else ''}"
    disk.parent_qcow2_path = None
    return None


def qcow2_check(qemu_img: str, path: Path) -> str | None:
    """None when ``qemu-img check`` finds the image sound, else what it found.

    Leaked clusters (exit 3) waste space but lose no data, so they pass.
    """
    proc = subprocess.run(
        [qemu_img, "check", "-f", "qcow2", str(path)], capture_output=True, text=True
    )
    if proc.returncode in (0, 3):
        return None
    text = (proc.stderr or proc.stdout).strip().splitlines()
    return f"qemu-img check failed (exit {proc.returncode}): {text[-1] if text else 'no output'}"
