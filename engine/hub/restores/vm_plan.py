"""A VM restore before it starts: every check that can refuse it, in one go, and the plan
the restore then acts on.

Refused in one line before anything is made: an unknown point, or a backup that did not
complete (404); a point without a recorded configuration (422); no name, a name that
another VM of the datacenter has (409), a folder, datastore or pool that does not exist
(404); an ``overwrite`` that does not name the point's own VM again (422).

With ``overwrite`` the VM is made under a temporary name and takes the original's name
only once its disks are written and the original is gone; the plan carries both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import vcenter
from engine.config import Settings
from engine.contract.restore import VMRestoreRequest
from engine.contract.status import OPEN_JOB
from engine.contract.vmconfig import VMConfig
from engine.credentials import CredentialError, Credentials, VMwareCredentialService
from engine.db.models import BackupJob, VMReplicationContext
from engine.errors import BadInput, Conflict, NotFound, VMNotFound
from engine.hub.nodes import NodeRef, pick_node
from engine.hub.restores.points import completed_point
from engine.vcenter.placement import MAX_NAME
from engine.vcenter.stored import connect_stored

TEMPORARY_SUFFIX = "-restoring"


@dataclass(frozen=True)
class SourceDisk:
    """A disk of the point: what a disk of the new VM is written from."""

    key: int
    qcow2_path: str
    capacity_bytes: int


@dataclass(frozen=True)
class Original:
    """The VM an ``overwrite`` replaces."""

    moref: str
    path: str


@dataclass(frozen=True)
class VMPlan:
    point_id: str
    context_id: str
    vm_name: str  # the point's VM
    config: VMConfig
    name: str  # what the VM is created as
    final_name: str  # what it is called once restored (differs with overwrite)
    placement: vcenter.Placement  # resolved on ``vc``, the session the start goes on with
    original: Original | None
    node: NodeRef
    credential_id: int
    credentials: Credentials  # what the node logs in with
    disks: tuple[SourceDisk, ...]
    request: VMRestoreRequest

    @property
    def path(self) -> str:
        """The inventory path the VM is created at."""
        return f"{self.placement.folder_path.rstrip('/')}/{self.name}"


@dataclass(frozen=True)
class _Point:
    point_id: str
    context_id: str
    vm_name: str
    vm_path: str
    config: VMConfig
    credential_id: int
    disks: tuple[SourceDisk, ...]


def _point(s: Session, point_id: str) -> _Point:
    row = completed_point(s, point_id)
    if row.vm_config is None:
        raise BadInput(
            f"point {point_id} has no recorded VM configuration: restore its disks with "
            "`sendense restore disk`"
        )
    try:
        config = VMConfig.model_validate_json(row.vm_config)
    except ValidationError:
        raise BadInput(f"point {point_id}'s recorded VM configuration cannot be read") from None
    disks = tuple(SourceDisk(d.disk_key, d.qcow2_path, d.bytes_total) for d in row.disks)
    backed_up = {d.key for d in disks}
    for d in config.disks:
        if d.key not in backed_up:
            raise BadInput(f"point {point_id} records disk {d.key} but holds no copy of it")
    ctx = s.get(VMReplicationContext, row.vm_context_id)
    if ctx is None or ctx.credential_id is None:
        raise BadInput(f"the VM context of point {point_id} has no vCenter credential")
    return _Point(
        point_id=row.id,
        context_id=row.vm_context_id,
        vm_name=row.vm_name,
        vm_path=ctx.vm_path,
        config=config,
        credential_id=ctx.credential_id,
        disks=tuple(d for d in disks if d.key in {c.key for c in config.disks}),
    )


def names_of(request: VMRestoreRequest, vm_name: str) -> tuple[str, str]:
    """(the name the VM is created as, the name it ends with)."""
    if request.overwrite is None:
        if not request.name:
            raise BadInput("give the restored VM a name (--name), or --overwrite the original")
        return request.name, request.name
    if request.overwrite != vm_name:
        raise BadInput(
            f"--overwrite must name the point's VM again ({vm_name}), not {request.overwrite!r}"
        )
    if request.name and request.name != vm_name:
        raise BadInput(f"--overwrite keeps the VM's name {vm_name}: give no other --name")
    stamp = f"{TEMPORARY_SUFFIX}-{int(time.time())}"
    return vm_name[: MAX_NAME - len(stamp)] + stamp, vm_name


def _original(s: Session, vc: vcenter.VCenter, point: _Point) -> Original:
    busy = s.scalar(
        select(BackupJob.id).where(
            BackupJob.vm_context_id == point.context_id, BackupJob.status.in_(OPEN_JOB)
        )
    )
    if busy:
        raise Conflict(
            f"VM {point.vm_name} has a backup queued or running ({busy}): it cannot be replaced"
        )
    try:
        return Original(
            vcenter.vm_info(vc, vcenter.find_vm(vc, point.vm_path)).moref, point.vm_path
        )
    except VMNotFound:
        raise NotFound(f"VM {point.vm_path} to overwrite does not exist") from None


def make_plan(
    s: Session, settings: Settings, request: VMRestoreRequest
) -> tuple[VMPlan, vcenter.VCenter]:
    """The plan, and the vCenter session it was checked on: the caller goes on with it
    (its placement's objects belong to it) and closes it."""
    point = _point(s, request.point_id)
    name, final_name = names_of(request, point.vm_name)
    try:
        creds = VMwareCredentialService(s, settings.key_path).get_credentials(point.credential_id)
    except CredentialError as exc:
        raise BadInput(str(exc)) from None
    node = pick_node(s)
    vc = connect_stored(s, settings.key_path, point.credential_id)
    try:
        placement = vcenter.resolve_placement(
            vc, point.config, folder=request.folder, datastore=request.datastore, pool=request.pool
        )
        vcenter.check_name_free(vc, placement, name)
        original = _original(s, vc, point) if request.overwrite else None
    except BaseException:
        vc.close()
        raise
    plan = VMPlan(
        point_id=point.point_id,
        context_id=point.context_id,
        vm_name=point.vm_name,
        config=point.config,
        name=name,
        final_name=final_name,
        placement=placement,
        original=original,
        node=node,
        credential_id=point.credential_id,
        credentials=creds,
        disks=point.disks,
        request=request,
    )
    return plan, vc
