"""The stand-in hub's backup and chain answers (tests/tui_standin_hub.py serves them):
VM contexts, a backup's preview and start, CBT switched on, and a point merged into its
child, all from the contract's models so the console meets the shapes the real hub sends.

The preview decides as the hub's plan does in its commonest cases (CBT off, no point
yet: a full, with the reason; else incremental on the VM's newest point); a test sets
``previews`` for anything else (a disk resized, a refusal). Backups asked for together
are queued (one job each, none when a VM has a job open already), and a cancel ends a
queued or running job, the queue behind it moving up. What the console asked is kept
(``requests``, ``queued``, ``cancelled``, ``cbt_calls``, ``merges``) for the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from engine.contract.hub import (
    BackupPreview,
    BackupRequest,
    BackupStarted,
    DiskPreview,
    Job,
    QueueRequest,
    VMContext,
    VMContextDisk,
    VMIn,
)
from engine.contract.inventory import VMInfo
from engine.contract.restore import MergeResult
from engine.contract.status import OPEN_JOB, BackupType, DiskStatus, JobStatus
from tests.tui_standin_restores import StandinRestores, _refused


class StandinBackups:
    def __init__(
        self,
        vm_at: Callable[[str], VMInfo | None],
        restores: StandinRestores,
        jobs: dict[str, Job],
        add_job: Callable[..., Job],
        publish: Callable[[Job], None],
        at: datetime,
    ) -> None:
        self.vm_at = vm_at  # the inventory's VM at that path
        self.restores = restores
        self.jobs = jobs  # the stand-in's backup jobs, by id
        self.add_job = add_job
        self.publish = publish
        self.at = at
        self.contexts: dict[str, VMContext] = {}  # by context id
        self.previews: dict[str, BackupPreview | tuple[int, str]] = {}  # by VM name: fixed
        # Every backup asked for, in order: started (POST /backups) or queued.
        self.requests: list[BackupRequest] = []
        self.queued: list[QueueRequest] = []
        self.cancelled: list[str] = []
        self.cbt_calls: list[str] = []
        self.merges: list[str] = []

    def add_context(self, vm: VMInfo) -> VMContext:
        context = VMContext(
            context_id=f"ctx-{vm.name}",
            vm_name=vm.name,
            vm_path=vm.path,
            vmware_vm_id=vm.moref,
            vcenter_host="127.0.0.1:8989",
            datacenter=vm.datacenter,
            credential_id=1,
            power_state=vm.power_state,
            cpu_count=vm.cpus,
            memory_mb=vm.memory_mb,
            guest_os=vm.guest_os,
            cbt_enabled=vm.cbt_enabled,
            disks=[
                VMContextDisk(
                    disk_key=d.key,
                    label=d.label,
                    capacity_bytes=d.capacity_bytes,
                    datastore=d.datastore,
                    vmdk_path=d.file_name,
                    change_id=None,
                )
                for d in vm.disks
            ],
        )
        self.contexts[context.context_id] = context
        return context

    def vm_of(self, request: BackupRequest) -> VMInfo | None:
        context = self.contexts.get(request.vm_context_id or "")
        return self.vm_at(context.vm_path if context else request.vm_path or "")

    def preview(self, vm: VMInfo, requested: BackupType) -> BackupPreview | tuple[int, str]:
        fixed = self.previews.get(vm.name)
        if fixed is not None:
            return fixed
        points = [p for p in self.restores.points.values() if p.vm_name == vm.name]
        reason = None
        if requested is BackupType.FULL:
            reason = "a full was asked for"
        elif not vm.cbt_enabled:
            reason = f"CBT is off on {vm.name}"
        elif not points:
            reason = f"{vm.name} has no restore point yet"
        mode = BackupType.FULL if reason else BackupType.INCREMENTAL
        return BackupPreview(
            vm_name=vm.name,
            vm_context_id=f"ctx-{vm.name}",
            requested_type=requested,
            backup_type=mode,
            parent_backup_id=None if reason else points[0].point_id,
            reason=reason,
            cbt_enabled=vm.cbt_enabled,
            disks=[
                DiskPreview(disk_key=d.key, capacity_bytes=d.capacity_bytes, mode=mode)
                for d in vm.disks
            ],
        )

    def queue(self, request: QueueRequest) -> list[Job] | tuple[int, str]:
        """One queued job per backup; a VM with a job open already refuses them all."""
        vms = []
        for backup in request.backups:
            vm = self.vm_of(backup)
            if vm is None:
                return 404, "no such VM context"
            if any(j.vm_name == vm.name and j.status in OPEN_JOB for j in self.jobs.values()):
                return 409, f"a backup of {vm.name} is queued or running already: none queued"
            vms.append(vm)
        self.requests.extend(request.backups)
        self.queued.append(request)
        return [self.add_job(vm, JobStatus.QUEUED) for vm in vms]

    def cancel(self, backup_id: str) -> Job | tuple[int, str]:
        job = self.jobs.get(backup_id)
        if job is None:
            return 404, f"no backup {backup_id}"
        if job.finished:
            return 409, f"backup {backup_id} has ended already"
        self.cancelled.append(backup_id)
        job.status, job.completed_at, job.rate_bps = JobStatus.CANCELLED, self.at, 0.0
        job.queue_position = None
        queue = sorted(
            (j for j in self.jobs.values() if j.status is JobStatus.QUEUED),
            key=lambda j: j.queue_position or 0,
        )
        for place, behind in enumerate(queue, 1):
            if behind.queue_position != place:
                behind.queue_position = place
                self.publish(behind)
        self.publish(job)
        return job

    def merge(self, point_id: str) -> MergeResult | tuple[int, str]:
        points = self.restores.points
        point = points.get(point_id)
        if point is None:
            return 404, f"no restore point {point_id}"
        read = [p.point_id for p in points.values() if point_id in p.chain and p.exports]
        if read:  # as the hub: never merged under a reader of it or of a later point
            return 409, f"restore point {read[0]} is being read (an instant export)"
        children = [p for p in points.values() if p.parent_point_id == point_id]
        if len(children) != 1:
            return 409, f"restore point {point_id} has no one child to merge into"
        (child,) = children
        self.merges.append(point_id)
        child.parent_point_id = point.parent_point_id
        for later in points.values():
            if point_id in later.chain:
                later.chain.remove(point_id)
        if child.parent_point_id is None:
            child.backup_type = BackupType.FULL
        del points[point_id]
        return MergeResult(
            merged_point_id=point_id, into_point_id=child.point_id, chain=child.chain
        )


def incremental_job(
    job: Job,
    parent: str,
    changed: dict[int, int],
    fallbacks: dict[int, str] | None = None,
) -> Job:
    """``job`` (from ``StandinState.add_job``) made an incremental on ``parent``: a disk
    in ``changed`` copies that many bytes of its capacity, one in ``fallbacks`` is
    copied whole with that reason."""
    fallbacks = fallbacks or {}
    job.backup_type, job.requested_type, job.parent_backup_id = (
        BackupType.INCREMENTAL,
        BackupType.AUTO,
        parent,
    )
    for disk in job.disks:
        fraction = disk.bytes_done / disk.bytes_total if disk.bytes_total else 0.0
        disk.capacity_bytes = disk.bytes_total
        if disk.disk_key in changed:
            disk.mode, disk.bytes_total = BackupType.INCREMENTAL, changed[disk.disk_key]
            disk.parent_qcow2_path = f"/repo/{job.vm_name}/{parent}/disk-{disk.disk_key}.qcow2"
        disk.fallback_reason = fallbacks.get(disk.disk_key)
        disk.bytes_done = int(disk.bytes_total * fraction)
        disk.status = DiskStatus.COMPLETED if fraction >= 1 else DiskStatus.COPYING
    job.bytes_total = sum(d.bytes_total for d in job.disks)
    job.bytes_done = sum(d.bytes_done for d in job.disks)
    return job


def backup_routes(data: StandinBackups) -> APIRouter:
    router = APIRouter()

    @router.get("/vms")
    async def vms() -> list[VMContext]:
        return list(data.contexts.values())

    @router.post("/vms", status_code=201, response_model=None)
    async def add_vm(request: VMIn) -> VMContext | JSONResponse:
        vm = data.vm_at(request.path)
        if vm is None:
            return _refused(404, f"no VM at {request.path}")
        return data.add_context(vm)

    @router.post("/vms/{context_id}/cbt", response_model=None)
    async def enable_cbt(context_id: str) -> VMContext | JSONResponse:
        context = data.contexts.get(context_id)
        vm = data.vm_at(context.vm_path) if context else None
        if context is None or vm is None:
            return _refused(404, f"no VM context {context_id}")
        data.cbt_calls.append(context_id)
        vm.cbt_enabled = context.cbt_enabled = True
        return context

    @router.post("/backups/preview", response_model=None)
    async def preview(request: BackupRequest) -> BackupPreview | JSONResponse:
        vm = data.vm_of(request)
        if vm is None:
            return _refused(404, "no such VM context")
        result = data.preview(vm, request.backup_type)
        return _refused(*result) if isinstance(result, tuple) else result

    @router.post("/backups", status_code=202, response_model=None)
    async def start(request: BackupRequest) -> BackupStarted | JSONResponse:
        vm = data.vm_of(request)
        if vm is None:
            return _refused(404, "no such VM context")
        data.requests.append(request)
        job = data.add_job(vm)
        return BackupStarted(
            backup_id=job.backup_id,
            vm_context_id=job.vm_context_id,
            vm_name=vm.name,
            disk_results=[],
            nbd_targets_string="",
        )

    @router.post("/backups/queue", status_code=202, response_model=None)
    async def queue(request: QueueRequest) -> list[Job] | JSONResponse:
        result = data.queue(request)
        return _refused(*result) if isinstance(result, tuple) else result

    @router.delete("/backups/{backup_id}", response_model=None)
    async def cancel(backup_id: str) -> Job | JSONResponse:
        result = data.cancel(backup_id)
        return _refused(*result) if isinstance(result, tuple) else result

    @router.post("/restore-points/{point_id}/merge", response_model=None)
    async def merge(point_id: str) -> MergeResult | JSONResponse:
        result = data.merge(point_id)
        return _refused(*result) if isinstance(result, tuple) else result

    return router
