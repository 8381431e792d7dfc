"""A backup before it starts: which VM, into which files, through which exports, on which
node, with which vCenter login.

``make_plan`` checks everything a start needs in one database session and writes the
job's pending rows; the start then acts on the plan alone and reads nothing back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.fields import url_safe
from engine.contract.hub import BackupPreview, BackupRequest
from engine.contract.status import ACTIVE_JOB, BackupType, DiskStatus, JobStatus
from engine.credentials import CredentialError, Credentials, VMwareCredentialService
from engine.db.models import BackupDisk, BackupJob, BackupRepository, VMReplicationContext
from engine.errors import BadInput, Conflict, NotFound
from engine.hub.jobs.chain_plan import ChainDecision, DiskDecision, decide, find_parent
from engine.hub.jobs.refresh import refresh_context
from engine.hub.nodes import NodeRef, pick_node
from engine.repository import restore_point_path

# A VM's name in ids and export names, cut so that both stay within their 191/200 bytes.
ID_NAME_CHARS = 160


@dataclass(frozen=True)
class PlannedDisk:
    disk_key: int
    capacity_bytes: int
    export_name: str
    qcow2_path: Path
    chain: DiskDecision  # full or incremental, and why


@dataclass(frozen=True)
class VMRef:
    """The VM a job backs up: its context, and its name and path in vCenter."""

    context_id: str
    name: str
    path: str


@dataclass(frozen=True)
class JobPlan:
    backup_id: str
    vm: VMRef
    repository_id: int
    node: NodeRef
    credentials: Credentials
    request: BackupRequest  # its backup type and rate limit
    chain: ChainDecision
    disks: tuple[PlannedDisk, ...]

    def pending_row(self) -> BackupJob:
        return BackupJob(
            id=self.backup_id,
            vm_context_id=self.vm.context_id,
            vm_name=self.vm.name,
            repository_id=self.repository_id,
            node_id=self.node.id,
            backup_type=self.chain.backup_type,
            requested_type=self.request.backup_type,
            parent_backup_id=self.chain.parent_backup_id,
            status=JobStatus.PENDING,
            total_bytes=sum(d.capacity_bytes for d in self.disks),
            disks=[
                BackupDisk(
                    disk_key=d.disk_key,
                    nbd_export_name=d.export_name,
                    qcow2_path=str(d.qcow2_path),
                    bytes_total=d.capacity_bytes,
                    capacity_bytes=d.capacity_bytes,
                    backup_mode=d.chain.mode,
                    fallback_reason=d.chain.reason,
                    parent_qcow2_path=str(d.chain.parent_qcow2_path)
                    if d.chain.parent_qcow2_path
                    else None,
                    # What the disk is once its export answers; until then the job is pending.
                    status=DiskStatus.QEMU_STARTED,
                )
                for d in self.disks
            ],
        )


def _id_name(vm_name: str) -> str:
    return url_safe(vm_name)[:ID_NAME_CHARS]


def export_name(vm_name: str, disk_key: int, backup_id: str) -> str:
    """``<vm>-disk<key>-<backup suffix>``: distinct across jobs, safe in an NBD URI."""
    suffix = backup_id.removeprefix(f"backup-{_id_name(vm_name)}-")
    return url_safe(f"{_id_name(vm_name)}-disk{disk_key}-{suffix}")


def unique_backup_id(s: Session, vm_name: str) -> str:
    """The seed's ``backup-<vm>-<unix seconds>``, the name made safe in a URL and a shell;
    ``-2``, ``-3``… when taken."""
    base = f"backup-{_id_name(vm_name)}-{int(time.time())}"
    candidate, n = base, 1
    while s.get(BackupJob, candidate) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def find_context(s: Session, request: BackupRequest) -> VMReplicationContext:
    """The one VM context the request names; a name or path that two contexts share (two
    vCenters) is a conflict to resolve with ``vm_context_id``, never a guess."""
    if request.vm_context_id:
        ctx = s.get(VMReplicationContext, request.vm_context_id)
        if ctx is None:
            raise NotFound(f"VM context {request.vm_context_id!r} does not exist")
        return ctx
    if request.vm_path:
        what, column, value = (
            f"VM path {request.vm_path!r}",
            VMReplicationContext.vm_path,
            request.vm_path,
        )
    else:
        assert request.vm_name is not None  # the request holds exactly one of the three
        what, column, value = (
            f"VM {request.vm_name!r}",
            VMReplicationContext.vm_name,
            request.vm_name,
        )
    rows = list(s.scalars(select(VMReplicationContext).where(column == value)))
    if not rows:
        raise NotFound(f"{what} has no context: add it first (POST /api/v1/vms)")
    if len(rows) > 1:
        named = ", ".join(f"{r.context_id} (vCenter {r.vcenter_host})" for r in rows)
        raise Conflict(f"{what} matches {len(rows)} VM contexts: {named}; give vm_context_id")
    return rows[0]


def _repository(s: Session, request: BackupRequest) -> BackupRepository:
    repo = s.get(BackupRepository, request.repository_id)
    if repo is None or not repo.enabled:
        raise NotFound(f"repository {request.repository_id} does not exist")
    return repo


def refresh_for_chain(
    s: Session, settings: Settings, ctx: VMReplicationContext, request: BackupRequest
) -> None:
    """Read the VM's disks and CBT state from vCenter again when the job may build on a
    point: a disk added or grown since the context's last refresh must be copied whole.
    A full, or a VM with no point to build on, decides nothing on them (the client
    checks the targets against the VM's disks itself), so vCenter is not asked twice."""
    if request.backup_type == BackupType.FULL:
        return
    parent, _ = find_parent(s, ctx.context_id, request.repository_id)
    if parent is not None:
        refresh_context(s, settings.key_path, ctx)


def preview(
    s: Session, settings: Settings, ctx: VMReplicationContext, request: BackupRequest
) -> BackupPreview:
    """What ``make_plan`` would decide for the same request; writes nothing but the
    context's refresh."""
    _repository(s, request)
    refresh_for_chain(s, settings, ctx, request)
    return decide(
        s, ctx, request.repository_id, request.backup_type, settings.copier.chunk_size
    ).preview(ctx)


def make_plan(
    s: Session, settings: Settings, ctx: VMReplicationContext, request: BackupRequest
) -> JobPlan:
    """Check the repository, the VM's login, disks and node; decide each disk's mode
    (``chain_plan``); write the pending rows."""
    repo = _repository(s, request)
    if ctx.credential_id is None:
        raise BadInput("VM context missing credential_id")
    busy = s.scalar(
        select(BackupJob.id).where(
            BackupJob.vm_context_id == ctx.context_id, BackupJob.status.in_(ACTIVE_JOB)
        )
    )
    if busy:
        raise Conflict(f"VM {ctx.vm_name} already has a backup running ({busy})")
    if not ctx.disks:
        raise BadInput(f"VM {ctx.vm_name} has no disks recorded: refresh its context")
    try:
        creds = VMwareCredentialService(s, settings.key_path).get_credentials(ctx.credential_id)
    except CredentialError as exc:
        raise BadInput(str(exc)) from None
    node = pick_node(s)
    backup_id = unique_backup_id(s, ctx.vm_name)
    chain = decide(s, ctx, repo.id, request.backup_type, settings.copier.chunk_size)
    plan = JobPlan(
        backup_id=backup_id,
        vm=VMRef(ctx.context_id, ctx.vm_name, ctx.vm_path),
        repository_id=repo.id,
        node=node,
        credentials=creds,
        request=request,
        chain=chain,
        disks=tuple(
            PlannedDisk(
                disk_key=d.disk_key,
                capacity_bytes=d.capacity_bytes,
                export_name=export_name(ctx.vm_name, d.disk_key, backup_id),
                qcow2_path=restore_point_path(Path(repo.path), ctx.vm_name, d.disk_key, backup_id),
                chain=d,
            )
            for d in chain.disks
        ),
    )
    s.add(plan.pending_row())
    return plan
