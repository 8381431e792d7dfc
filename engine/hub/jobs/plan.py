"""A backup before it starts: which VM, into which files, through which exports, on which
node, with which vCenter login.

``make_plan`` checks everything a start needs in one database session and writes the
job's pending rows (a new job's, or a queued job's own row made pending); the start then
acts on the plan alone and reads nothing back. ``check_vm`` is the part of those checks
that holds already when a job is queued (the queue refuses what could never start).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from engine.config import Settings
from engine.contract.fields import url_safe
from engine.contract.hub import BackupPreview, BackupRequest
from engine.contract.status import OPEN_JOB, BackupType, DiskStatus, JobStatus
from engine.credentials import CredentialError, Credentials, VMwareCredentialService
from engine.db.models import BackupDisk, BackupJob, BackupRepository, VMReplicationContext
from engine.errors import BadInput, Conflict, NotFound, SendenseError
from engine.hub.jobs.chain_plan import ChainDecision, DiskDecision, decide, find_parent
from engine.hub.jobs.refresh import refresh_context
from engine.hub.nodes import NodeRef
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

    def pending_row(self, queued: BackupJob | None = None) -> BackupJob:
        """The job's row as a pending job: a new row, or the queued job's own (which keeps
        its id, creation time, place in the queue and policy run)."""
        row = queued or BackupJob(id=self.backup_id, vm_context_id=self.vm.context_id)
        row.vm_name = self.vm.name
        row.repository_id = self.repository_id
        row.node_id = self.node.id
        row.backup_type = self.chain.backup_type
        row.requested_type = self.request.backup_type
        row.parent_backup_id = self.chain.parent_backup_id
        row.status = JobStatus.PENDING
        row.total_bytes = sum(d.capacity_bytes for d in self.disks)
        row.disks = [
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
        ]
        return row


def _id_name(vm_name: str) -> str:
    return url_safe(vm_name)[:ID_NAME_CHARS]


def export_name(vm_name: str, disk_key: int, backup_id: str) -> str:
    """``<vm>-disk<key>-<backup suffix>``: distinct across jobs, safe in an NBD URI."""
    suffix = backup_id.removeprefix(f"backup-{_id_name(vm_name)}-")
    return url_safe(f"{_id_name(vm_name)}-disk{disk_key}-{suffix}")


def unique_backup_ids(s: Session, vm_names: Sequence[str]) -> list[str]:
    """The seed's ``backup-<vm>-<unix seconds>`` for each VM, the name made safe in a URL
    and a shell; ``-2``, ``-3``… when taken (in the database, or by an earlier name of
    the list). One query, unless some are taken."""
    now = int(time.time())
    bases = [f"backup-{_id_name(name)}-{now}" for name in vm_names]
    query = select(BackupJob.id).where(BackupJob.id.in_(set(bases)))
    taken = set(s.scalars(query)) if bases else set()
    out: list[str] = []
    for base in bases:
        candidate, n = base, 1
        while candidate in taken or (candidate != base and s.get(BackupJob, candidate) is not None):
            n += 1
            candidate = f"{base}-{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def unique_backup_id(s: Session, vm_name: str) -> str:
    return unique_backup_ids(s, [vm_name])[0]


def find_context(s: Session, request: BackupRequest) -> VMReplicationContext:
    """The one VM context the request names; a name or path that two contexts share (two
    vCenters) is a conflict to resolve with ``vm_context_id``, never a guess."""
    found = find_contexts(s, [request])[0]
    if isinstance(found, SendenseError):
        raise found
    return found


def find_contexts(
    s: Session, requests: Sequence[BackupRequest]
) -> list[VMReplicationContext | SendenseError]:
    """``find_context`` of each request (the context, or why there is none), in one
    query per way of naming VMs whatever their number, the contexts' disks with them."""
    load = select(VMReplicationContext).options(selectinload(VMReplicationContext.disks))
    ids = {r.vm_context_id for r in requests if r.vm_context_id}
    paths = {r.vm_path for r in requests if r.vm_path and not r.vm_context_id}
    names = {r.vm_name for r in requests if r.vm_name}
    by_id = (
        {c.context_id: c for c in s.scalars(load.where(VMReplicationContext.context_id.in_(ids)))}
        if ids
        else {}
    )
    by_path: dict[str, list[VMReplicationContext]] = defaultdict(list)
    by_name: dict[str, list[VMReplicationContext]] = defaultdict(list)
    if paths:
        for c in s.scalars(load.where(VMReplicationContext.vm_path.in_(paths))):
            by_path[c.vm_path].append(c)
    if names:
        for c in s.scalars(load.where(VMReplicationContext.vm_name.in_(names))):
            by_name[c.vm_name].append(c)
    out: list[VMReplicationContext | SendenseError] = []
    for request in requests:
        if request.vm_context_id:
            found = by_id.get(request.vm_context_id)
            out.append(found or NotFound(f"VM context {request.vm_context_id!r} does not exist"))
        elif request.vm_path:
            out.append(_the_one(f"VM path {request.vm_path!r}", by_path[request.vm_path]))
        else:
            assert request.vm_name is not None  # the request holds exactly one of the three
            out.append(_the_one(f"VM {request.vm_name!r}", by_name[request.vm_name]))
    return out


def _the_one(what: str, rows: list[VMReplicationContext]) -> VMReplicationContext | SendenseError:
    if not rows:
        return NotFound(f"{what} has no context: add it first (POST /api/v1/vms)")
    if len(rows) > 1:
        named = ", ".join(f"{r.context_id} (vCenter {r.vcenter_host})" for r in rows)
        return Conflict(f"{what} matches {len(rows)} VM contexts: {named}; give vm_context_id")
    return rows[0]


def repository(s: Session, repository_id: int) -> BackupRepository:
    repo = s.get(BackupRepository, repository_id)
    if repo is None or not repo.enabled:
        raise NotFound(f"repository {repository_id} does not exist")
    return repo


def open_job(
    s: Session, context_id: str, exclude: str | None = None
) -> tuple[str, JobStatus] | None:
    """The VM's job that is queued, pending or running (other than ``exclude``), if any."""
    query = select(BackupJob.id, BackupJob.status).where(
        BackupJob.vm_context_id == context_id, BackupJob.status.in_(OPEN_JOB)
    )
    if exclude is not None:
        query = query.where(BackupJob.id != exclude)
    found = s.execute(query.limit(1)).first()
    return (found[0], JobStatus(found[1])) if found else None


def busy(vm_name: str, job_id: str, status: JobStatus) -> Conflict:
    """The refusal of a second job for a VM that has one coming or going."""
    word = "queued" if status == JobStatus.QUEUED else "running"
    return Conflict(f"VM {vm_name} already has a backup {word} ({job_id})")


def check_vm(
    s: Session,
    settings: Settings,
    ctx: VMReplicationContext,
    opened: dict[int, Credentials] | None = None,
) -> Credentials:
    """What a VM needs before any job of it can start (checked when it is queued too):
    its vCenter login, readable, and its disks recorded. The login; ``opened`` keeps the
    logins already opened (many VMs of one vCenter open it once)."""
    if ctx.credential_id is None:
        raise BadInput("VM context missing credential_id")
    if not ctx.disks:
        raise BadInput(f"VM {ctx.vm_name} has no disks recorded: refresh its context")
    if opened is not None and ctx.credential_id in opened:
        return opened[ctx.credential_id]
    try:
        creds = VMwareCredentialService(s, settings.key_path).get_credentials(ctx.credential_id)
    except CredentialError as exc:
        raise BadInput(str(exc)) from None
    if opened is not None:
        opened[ctx.credential_id] = creds
    return creds


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
    repository(s, request.repository_id)
    refresh_for_chain(s, settings, ctx, request)
    return decide(
        s, ctx, request.repository_id, request.backup_type, settings.copier.chunk_size
    ).preview(ctx)


def make_plan(
    s: Session,
    settings: Settings,
    ctx: VMReplicationContext,
    request: BackupRequest,
    pick: Callable[[], NodeRef],
    queued: BackupJob | None = None,
) -> JobPlan:
    """Check the repository, the VM's login, disks and node (``pick``: called once the
    rest holds); decide each disk's mode (``chain_plan``); write the pending rows, into
    the ``queued`` job's row when it is one leaving the queue."""
    repo = repository(s, request.repository_id)
    other = open_job(s, ctx.context_id, exclude=queued.id if queued else None)
    if other:
        raise busy(ctx.vm_name, *other)
    creds = check_vm(s, settings, ctx)
    node = pick()
    backup_id = queued.id if queued else unique_backup_id(s, ctx.vm_name)
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
    s.add(plan.pending_row(queued))
    return plan
