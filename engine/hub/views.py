"""The contract's answers (``Job``, ``VMContext``, ``Repository``, ``VCenter``) built from rows.

A running job's numbers live in memory (progress.JobState) and reach the database only
every few seconds, so a view overlays the in-memory state on the row when there is one.
What a job's view names beside its row (its place in the queue, its node's and policy's
names) is looked up for a whole page of jobs at once (``job_links``): a listing costs the
same few queries for 1 job or 1,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.hub import Job, JobDisk, JobSummary, Repository, VCenter, VMContext
from engine.contract.status import BackupType, DiskStatus, JobStatus, SnapshotKind
from engine.db.models import (
    BackupJob,
    BackupPolicy,
    BackupRepository,
    Node,
    PolicyRun,
    VMReplicationContext,
    VMwareCredential,
)
from engine.hub.progress import JobState
from engine.hub.queue.store import positions
from engine.repository import usage


def _utc(value: datetime | None) -> datetime | None:
    """The database keeps naive UTC; the wire says it is UTC."""
    return value.replace(tzinfo=UTC) if value else None


@dataclass(frozen=True)
class JobLinks:
    """What a job's view shows of other rows: its place in the queue (queued jobs only),
    its node's name and the name of the policy whose run queued it."""

    queue_position: int | None = None
    node_name: str | None = None
    policy_name: str | None = None


def job_links(s: Session, rows: Sequence[BackupJob]) -> dict[str, JobLinks]:
    """The links of every row, in three queries at most (none for what no row needs)."""
    places = positions(s, [r.id for r in rows if r.status == JobStatus.QUEUED])
    node_ids = {r.node_id for r in rows if r.node_id is not None}
    run_ids = {r.policy_run_id for r in rows if r.policy_run_id is not None}
    nodes: dict[int, str] = {}
    if node_ids:
        named_nodes = select(Node.id, Node.name).where(Node.id.in_(node_ids))
        nodes = {i: n for i, n in s.execute(named_nodes)}
    policies: dict[int, str] = {}
    if run_ids:
        named = (
            select(PolicyRun.id, BackupPolicy.name)
            .join(BackupPolicy, BackupPolicy.id == PolicyRun.policy_id)
            .where(PolicyRun.id.in_(run_ids))
        )
        policies = {i: n for i, n in s.execute(named)}
    return {
        r.id: JobLinks(
            queue_position=places.get(r.id),
            node_name=nodes.get(r.node_id) if r.node_id is not None else None,
            policy_name=policies.get(r.policy_run_id) if r.policy_run_id is not None else None,
        )
        for r in rows
    }


def job_view(row: BackupJob, state: JobState | None = None, links: JobLinks | None = None) -> Job:
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
        queue_position=links.queue_position if links else None,
        node_name=links.node_name if links else None,
        policy_name=links.policy_name if links else None,
        policy_run_id=row.policy_run_id,
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
