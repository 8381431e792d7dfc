"""The contract's answers (``Job``, ``VMContext``, ``Repository``, ``VCenter``) built from rows.

A running job's numbers live in memory (progress.JobState) and reach the database only
every few seconds, so a view overlays the in-memory state on the row when there is one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from engine.contract.hub import Job, JobDisk, JobSummary, Repository, VCenter, VMContext
from engine.contract.status import BackupType, DiskStatus, JobStatus, SnapshotKind
from engine.db.models import BackupJob, BackupRepository, VMReplicationContext, VMwareCredential
from engine.hub.progress import JobState
from engine.repository import usage


def _utc(value: datetime | None) -> datetime | None:
    """The database keeps naive UTC; the wire says it is UTC."""
    return value.replace(tzinfo=UTC) if value else None


def job_view(row: BackupJob, state: JobState | None = None) -> Job:
    disks = []
    for d in row.disks:
        live = state.disks.get(d.disk_key) if state else None
        disks.append(
            JobDisk(
                disk_key=d.disk_key,
                nbd_port=d.nbd_port,
                nbd_export_name=d.nbd_export_name,
                qcow2_path=d.qcow2_path,
                status=live.status if live else DiskStatus(d.status),
                bytes_done=live.bytes_done if live else d.bytes_done,
                bytes_total=live.bytes_total if live else d.bytes_total,
                bytes_zero=live.bytes_zero if live else d.bytes_zero,
                rate_bps=live.rate_bps if live else 0.0,
                change_id=live.change_id if live else d.change_id,
                mode=live.mode if live else BackupType(d.backup_mode),
                capacity_bytes=live.capacity_bytes if live else d.capacity_bytes,
                fallback_reason=live.fallback_reason if live else d.fallback_reason,
                parent_qcow2_path=live.parent_qcow2_path if live else d.parent_qcow2_path,
                qcow2_size_bytes=d.qcow2_size_bytes,
                error_message=(live.error if live else None) or d.error_message,
            )
        )
    snapshot_kind = (state.snapshot_kind if state else None) or row.snapshot_kind
    return Job(
        backup_id=row.id,
        status=JobStatus(row.status),
        vm_name=row.vm_name,
        vm_context_id=row.vm_context_id,
        backup_type=BackupType(row.backup_type),
        requested_type=BackupType(row.requested_type) if row.requested_type else None,
        parent_backup_id=row.parent_backup_id,
        repository_id=row.repository_id,
        node_id=row.node_id,
        created_at=_utc(row.created_at),
        started_at=_utc(row.started_at),
        completed_at=_utc(row.completed_at),
        bytes_done=sum(d.bytes_done for d in disks),
        bytes_total=sum(d.bytes_total for d in disks),
        bytes_zero=sum(d.bytes_zero for d in disks),
        rate_bps=sum(d.rate_bps for d in disks),
        error_message=row.error_message,
        snapshot_kind=SnapshotKind(snapshot_kind) if snapshot_kind else None,
        disks=disks,
    )


def job_summary(row: BackupJob) -> JobSummary:
    return JobSummary.model_validate(job_view(row), from_attributes=True)


def context_view(ctx: VMReplicationContext, last_backups: list[BackupJob]) -> VMContext:
    """The context's row and its disks' (whose columns the model names alike)."""
    view = VMContext.model_validate(ctx, from_attributes=True)
    view.last_backups = [job_summary(j) for j in last_backups]
    return view


def repository_view(repo: BackupRepository) -> Repository:
    """The row, and the space its folder takes and has left (or why it cannot be read)."""
    view = Repository.model_validate(repo, from_attributes=True)
    try:
        space = usage(Path(repo.path))
    except OSError as exc:
        view.error = str(exc)
    else:
        view.used_bytes, view.free_bytes = space.used_bytes, space.free_bytes
        view.total_bytes = space.total_bytes
    return view


def vcenter_view(row: VMwareCredential) -> VCenter:
    return VCenter(
        id=row.id,
        name=row.credential_name,
        host=row.vcenter_host,
        username=row.username,
        thumbprint=row.thumbprint,
    )
