"""Restore points: the completed backups, as every way back reads them.

A point is a ``backup_jobs`` row whose status is ``completed``; anything else (a failed,
cancelled or running backup) is not one, whatever its files. A point's disks are read
through their qcow2 backing chain, so an incremental's chain is walked up its
``parent_backup_id`` links. Instant exports, disk restores and VM restores all start
from ``completed_point`` and ``point_disk`` here, so they refuse the same things alike.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from engine.contract.restore import RestorePoint, RestorePointDisk, RestorePointQuery
from engine.contract.status import BackupType, JobStatus, SnapshotKind, Verification
from engine.db.models import (
    BackupDisk,
    BackupJob,
    BackupRepository,
    Node,
    RestoreExport,
    RestoreJob,
    VMDisk,
    VMReplicationContext,
)
from engine.errors import Conflict, NotFound
from engine.hub.jobs.ending import remove_restore_point
from engine.hub.views import _utc

# A chain longer than this is a loop in the rows, not a chain of backups.
MAX_CHAIN = 10_000
_FAILED = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


def completed_point(s: Session, point_id: str) -> BackupJob:
    """The point's row; NotFound for an unknown id and for a backup that did not complete."""
    row = s.get(BackupJob, point_id)
    if row is None:
        raise NotFound(f"restore point {point_id} does not exist")
    if row.status != JobStatus.COMPLETED:
        raise NotFound(f"not a restore point: backup {point_id} is {row.status}")
    return row


def point_disk(row: BackupJob, disk_key: int) -> BackupDisk:
    """The point's disk of that key; NotFound naming the keys it has."""
    for disk in row.disks:
        if disk.disk_key == disk_key:
            return disk
    keys = ", ".join(str(d.disk_key) for d in row.disks) or "none"
    raise NotFound(f"point {row.id} has no disk {disk_key} (disks: {keys})")


def chain_of(s: Session, row: BackupJob) -> list[str]:
    """Point ids from the chain's full backup down to ``row``."""
    chain = [row.id]
    parent = row.parent_backup_id
    while parent is not None and len(chain) < MAX_CHAIN:
        chain.append(parent)
        up = s.get(BackupJob, parent)
        parent = up.parent_backup_id if up is not None else None
    return chain[::-1]


def _file_size(path: str) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def export_names_of(s: Session, point_id: str) -> list[str]:
    """The point's instant exports (their leases: the rows the sweep keeps true)."""
    rows = select(RestoreExport.name).where(RestoreExport.backup_job_id == point_id)
    return list(s.scalars(rows.order_by(RestoreExport.name)))


def point_view(s: Session, row: BackupJob) -> RestorePoint:
    ctx = s.get(VMReplicationContext, row.vm_context_id)
    repo = s.get(BackupRepository, row.repository_id)
    node = s.get(Node, row.node_id) if row.node_id is not None else None
    disks = [
        RestorePointDisk(
            disk_key=d.disk_key,
            capacity_bytes=d.bytes_total,
            qcow2_path=d.qcow2_path,
            qcow2_size_bytes=_file_size(d.qcow2_path),
            parent_qcow2_path=d.parent_qcow2_path,
            change_id=d.change_id,
        )
        for d in row.disks
    ]
    return RestorePoint(
        point_id=row.id,
        vm_name=row.vm_name,
        vm_context_id=row.vm_context_id,
        vm_path=ctx.vm_path if ctx is not None else None,
        backup_type=BackupType(row.backup_type),
        snapshot_kind=SnapshotKind(row.snapshot_kind) if row.snapshot_kind else None,
        created_at=_utc(row.created_at),
        completed_at=_utc(row.completed_at),
        repository_id=row.repository_id,
        repository_name=repo.name if repo is not None else None,
        node_id=row.node_id,
        node_name=node.name if node is not None else None,
        parent_point_id=row.parent_backup_id,
        chain=chain_of(s, row),
        bytes_total=sum(d.capacity_bytes for d in disks),
        size_bytes=sum(d.qcow2_size_bytes or 0 for d in disks),
        verification=Verification(row.verification),
        verification_detail=row.verification_detail,
        has_config=row.vm_config is not None,
        exports=export_names_of(s, row.id),
        disks=disks,
    )


def list_points(s: Session, query: RestorePointQuery) -> list[RestorePoint]:
    """Completed backups newest first; ``vm`` matches a VM's name or its inventory path."""
    rows = (
        select(BackupJob)
        .where(BackupJob.status == JobStatus.COMPLETED)
        .order_by(BackupJob.completed_at.desc(), BackupJob.created_at.desc(), BackupJob.id.desc())
    )
    if query.vm:
        paths = select(VMReplicationContext.context_id).where(
            VMReplicationContext.vm_path == query.vm
        )
        rows = rows.where(or_(BackupJob.vm_name == query.vm, BackupJob.vm_context_id.in_(paths)))
    return [point_view(s, r) for r in s.scalars(rows.limit(query.limit))]


def get_point(s: Session, point_id: str) -> RestorePoint:
    return point_view(s, completed_point(s, point_id))


def delete_point(s: Session, point_id: str, busy: set[str]) -> None:
    """Remove the point's rows and then its files, unless something still reads it: a live
    instant export, a running restore (``busy``), or a later point of its chain."""
    row = completed_point(s, point_id)
    exports = export_names_of(s, point_id)
    if exports:
        raise Conflict(
            f"point {point_id} has a live export ({', '.join(exports)}): "
            "unexport it first (sendense restore unexport NAME)"
        )
    if point_id in busy:
        raise Conflict(f"point {point_id} is being restored: wait for the restore or cancel it")
    later = list(s.scalars(select(BackupJob).where(BackupJob.parent_backup_id == point_id)))
    child = next((j.id for j in later if j.status not in _FAILED), None)
    if child is not None:
        raise Conflict(
            f"point {point_id} is the base of point {child}: delete that one first, "
            f"or merge it into it (sendense chain merge {point_id})"
        )
    # Backups that failed on the point keep their history, on what the point built on
    # (as a merge leaves them): they read nothing of it.
    for failed in later:
        failed.parent_backup_id = row.parent_backup_id
    s.flush()
    files = [Path(d.qcow2_path) for d in row.disks]
    context_id = row.vm_context_id
    drop_point(s, row)
    _rebase_change_ids(s, context_id)
    for path in files:
        remove_restore_point(path)


def drop_point(s: Session, row: BackupJob) -> None:
    """The point's row, and its restores: history of a point that is no more."""
    for restore in s.scalars(select(RestoreJob).where(RestoreJob.backup_job_id == row.id)):
        s.delete(restore)
    s.flush()  # no relationship tells the session to delete those first
    s.delete(row)
    s.flush()


def _rebase_change_ids(s: Session, context_id: str) -> None:
    """The VM's disks' change ids as of its newest remaining point (None: no point left),
    so the next incremental never builds on the changes of a deleted point."""
    newest = s.scalars(
        select(BackupJob)
        .where(BackupJob.vm_context_id == context_id, BackupJob.status == JobStatus.COMPLETED)
        .order_by(BackupJob.completed_at.desc(), BackupJob.created_at.desc())
    ).first()
    ids = {d.disk_key: d.change_id for d in newest.disks} if newest is not None else {}
    for disk in s.scalars(select(VMDisk).where(VMDisk.vm_context_id == context_id)):
        disk.change_id = ids.get(disk.disk_key)
