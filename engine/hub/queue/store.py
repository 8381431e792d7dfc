"""The queue in the database: a queued job is a ``backup_jobs`` row with status
``queued``, no node and no disks, ordered by ``queue_order``.

Keeping the queue in the jobs' own table means a queued job has its backup id from the
start (the API, the CLI and a policy run follow it like any job), survives a hub restart
as it is, and leaves the queue by a status change of one row: ``take`` (dispatched),
``cancel`` (cancelled), ``requeue`` (its node could not be reached). Each change is one
``UPDATE ... WHERE status = 'queued'``, so a cancel and a dispatch of the same job never
both win.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from engine.contract.hub import BackupRequest
from engine.contract.status import ACTIVE_JOB, OPEN_JOB, BackupType, JobStatus
from engine.db.models import (
    BackupJob,
    RestoreDisk,
    RestoreJob,
    VMDisk,
    VMReplicationContext,
    utcnow,
)
from engine.hub.queue.dispatch import QueuedJob

# How many queued jobs a dispatch reads at a time.
QUEUE_CHUNK = 500


def queued_row(
    backup_id: str,
    ctx: VMReplicationContext,
    request: BackupRequest,
    order: int,
    policy_run_id: int | None = None,
) -> BackupJob:
    """A new queued job of the VM. Its ``backup_type`` is what was asked (``auto`` until
    the start decides full or incremental)."""
    return BackupJob(
        id=backup_id,
        vm_context_id=ctx.context_id,
        vm_name=ctx.vm_name,
        repository_id=request.repository_id,
        node_id=None,
        backup_type=request.backup_type,
        requested_type=request.backup_type,
        status=JobStatus.QUEUED,
        queue_order=order,
        max_rate_mib=request.max_rate_mib,
        policy_run_id=policy_run_id,
        created_at=utcnow(),
        disks=[],  # known to have none: its view reads no disks
    )


def request_of(row: BackupJob) -> BackupRequest:
    """The backup a queued row stands for, as ``POST /backups`` would have asked it."""
    return BackupRequest(
        vm_context_id=row.vm_context_id,
        repository_id=row.repository_id,
        backup_type=BackupType(row.requested_type or row.backup_type),
        max_rate_mib=row.max_rate_mib,
    )


def open_jobs(s: Session) -> dict[str, tuple[str, JobStatus]]:
    """Every VM's job that is queued, pending or running: (backup id, status) by VM
    context, in one query (as many rows as the queue is long)."""
    rows = s.execute(
        select(BackupJob.vm_context_id, BackupJob.id, BackupJob.status).where(
            BackupJob.status.in_(OPEN_JOB)
        )
    )
    return {cid: (bid, JobStatus(st)) for cid, bid, st in rows}


def _leave(s: Session, backup_id: str, **values: object) -> bool:
    """Move a job out of ``queued``; False when it is no longer queued."""
    result = s.execute(
        update(BackupJob)
        .where(BackupJob.id == backup_id, BackupJob.status == JobStatus.QUEUED)
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )
    return bool(getattr(result, "rowcount", 0))


def take(s: Session, backup_id: str, node_id: int) -> bool:
    """The job leaves the queue for the node (pending); False when it is not queued."""
    return _leave(s, backup_id, status=JobStatus.PENDING, node_id=node_id)


def cancel(s: Session, backup_id: str) -> bool:
    """Cancel a queued job (no node knows it: nothing else to stop); False when it is not
    queued."""
    return _leave(s, backup_id, status=JobStatus.CANCELLED, completed_at=utcnow())


def requeue(row: BackupJob) -> None:
    """A job whose node could not be reached goes back to its place in the queue, as it
    was queued (its ``queue_order`` was never changed)."""
    row.status = JobStatus.QUEUED
    row.node_id = None
    row.disks = []
    row.backup_type = row.requested_type or row.backup_type
    row.parent_backup_id = None
    row.total_bytes = row.bytes_transferred = 0
    row.started_at = None


_SHAPE = (
    select(
        BackupJob.id,
        BackupJob.vm_context_id,
        BackupJob.node_id,
        VMReplicationContext.vcenter_host,
        VMReplicationContext.esxi_host,
        BackupJob.queue_order,
    )
    .join(VMReplicationContext, VMReplicationContext.context_id == BackupJob.vm_context_id)
    .order_by(BackupJob.queue_order, BackupJob.id)
)


@dataclass(frozen=True)
class Shaped:
    """A job as the dispatch sees it, its node, and its place in the queue's order."""

    job: QueuedJob
    node_id: int | None
    queue_order: int | None


def _shaped(s: Session, *where: ColumnElement[bool], limit: int | None = None) -> list[Shaped]:
    """The jobs ``where`` finds, in queue order, as the dispatch sees them: two queries,
    the second for their VMs' disks."""
    jobs = s.execute(_SHAPE.where(*where).limit(limit)).all()
    datastores: dict[str, list[str]] = defaultdict(list)
    contexts = {cid for _, cid, *_ in jobs}
    if contexts:
        for context_id, datastore in s.execute(
            select(VMDisk.vm_context_id, VMDisk.datastore)
            .where(VMDisk.vm_context_id.in_(contexts))
            .order_by(VMDisk.vm_context_id, VMDisk.disk_key)
        ):
            datastores[context_id].append(datastore or "")
    return [
        Shaped(QueuedJob(bid, vcenter, esxi, tuple(datastores[cid])), node_id, order)
        for bid, cid, node_id, vcenter, esxi, order in jobs
    ]


def queued_jobs(s: Session, chunk: int = QUEUE_CHUNK) -> Iterator[list[QueuedJob]]:
    """The queue, first in line first, ``chunk`` jobs at a time: a dispatch that has
    filled the room there is stops reading (a queue of thousands is not read whole)."""
    queued = BackupJob.status == JobStatus.QUEUED
    jobs = _shaped(s, queued, limit=chunk)
    while jobs:
        yield [j.job for j in jobs]
        if len(jobs) < chunk:
            return
        order, last = jobs[-1].queue_order, jobs[-1].job.backup_id
        after = or_(
            BackupJob.queue_order > order,
            and_(BackupJob.queue_order == order, BackupJob.id > last),
        )
        jobs = _shaped(s, queued, after, limit=chunk)


def running_jobs(s: Session) -> list[tuple[QueuedJob, int | None]]:
    """The jobs that hold room now (pending or running), each with its node: backups,
    and VM restores (a node writes their disks through the hub's exports; the host and
    datastores they write to are not known here)."""
    restores = s.execute(
        select(RestoreJob.id, RestoreJob.node_id, func.count(RestoreDisk.id))
        .join(RestoreDisk, RestoreDisk.restore_job_id == RestoreJob.id)
        .where(RestoreJob.status.in_(ACTIVE_JOB), RestoreJob.node_id.is_not(None))
        .group_by(RestoreJob.id, RestoreJob.node_id)
    )
    backups = _shaped(s, BackupJob.status.in_(ACTIVE_JOB))
    return [(b.job, b.node_id) for b in backups] + [
        (QueuedJob(rid, "", None, ("",) * disks), node_id) for rid, node_id, disks in restores
    ]


def positions(s: Session, backup_ids: Iterable[str]) -> dict[str, int]:
    """The place in the queue (1 goes first) of those of ``backup_ids`` that are queued.
    A page of jobs holds a stretch of the queue (its head, for ``?status=queued``; its
    tail, for the newest jobs): the rows before the stretch are counted on the
    ``(status, queue_order)`` index and only the stretch itself is read, not the whole
    queue ranked."""
    ids = list(backup_ids)
    if not ids:
        return {}
    queued = BackupJob.status == JobStatus.QUEUED
    orders = [
        o
        for o in s.scalars(select(BackupJob.queue_order).where(queued, BackupJob.id.in_(ids)))
        if o is not None
    ]
    if not orders:
        return {}
    low, high = min(orders), max(orders)
    before = s.scalar(select(func.count()).where(queued, BackupJob.queue_order < low)) or 0
    stretch = s.scalars(
        select(BackupJob.id)
        .where(queued, BackupJob.queue_order >= low, BackupJob.queue_order <= high)
        .order_by(BackupJob.queue_order, BackupJob.id)
    )
    wanted = set(ids)
    return {bid: before + n for n, bid in enumerate(stretch, 1) if bid in wanted}
