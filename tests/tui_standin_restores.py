"""The stand-in hub's restore answers (tests/tui_standin_hub.py serves them): restore
points with their chains and verification, instant exports, restore jobs, all built from
the contract's models so the console meets the shapes the real hub sends.

Points, exports and jobs are made by the test (``add_point``, ``export``,
``add_restore``) with fixed times; a restore asked for over the API starts running and
stays where it is, a cancel ends it at once (and publishes it, as the real hub does).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from engine.contract.hub import ErrorAnswer
from engine.contract.inventory import VMInfo
from engine.contract.restore import (
    DiskRestoreRequest,
    ExportRequest,
    RestoreExport,
    RestoreJob,
    RestoreJobDisk,
    RestorePoint,
    RestorePointDisk,
    VMRestoreRequest,
)
from engine.contract.status import (
    BackupType,
    DiskFormat,
    DiskStatus,
    JobStatus,
    RestoreKind,
    SnapshotKind,
    Verification,
)


class StandinRestores:
    def __init__(
        self,
        vm_named: Callable[[str], VMInfo | None],
        publish: Callable[[RestoreJob], None],
        at: datetime,
    ) -> None:
        self.vm_named = vm_named  # the inventory's VM of that name (a name taken)
        self.publish = publish
        self.at = at  # every time shown is this one, or hours before it
        self.points: dict[str, RestorePoint] = {}  # newest first, as the hub lists them
        self.exports: dict[str, RestoreExport] = {}
        self.restores: dict[str, RestoreJob] = {}

    def add_point(
        self,
        vm: VMInfo,
        point_id: str,
        hours_ago: float = 0.0,
        parent: str | None = None,
        verification: Verification = Verification.UNVERIFIED,
        detail: str | None = None,
    ) -> RestorePoint:
        """A completed backup of ``vm``; with ``parent``, an incremental on that point."""
        at = self.at - timedelta(hours=hours_ago)
        chain = [*self.points[parent].chain, point_id] if parent else [point_id]
        disks = [
            RestorePointDisk(
                disk_key=d.key,
                capacity_bytes=d.capacity_bytes,
                qcow2_path=f"/repo/{vm.name}/{point_id}/disk-{d.key}.qcow2",
                qcow2_size_bytes=d.capacity_bytes // (8 if parent else 2),
                parent_qcow2_path=(
                    f"/repo/{vm.name}/{parent}/disk-{d.key}.qcow2" if parent else None
                ),
            )
            for d in vm.disks
        ]
        point = RestorePoint(
            point_id=point_id,
            vm_name=vm.name,
            vm_context_id=f"ctx-{vm.name}",
            vm_path=vm.path,
            backup_type=BackupType.INCREMENTAL if parent else BackupType.FULL,
            snapshot_kind=SnapshotKind.QUIESCED,
            created_at=at - timedelta(minutes=2),
            completed_at=at,
            repository_id=1,
            repository_name="default",
            node_id=1,
            node_name="local",
            parent_point_id=parent,
            chain=chain,
            bytes_total=sum(d.capacity_bytes for d in disks),
            size_bytes=sum(d.qcow2_size_bytes or 0 for d in disks),
            verification=verification,
            verification_detail=detail,
            has_config=True,
            disks=disks,
        )
        self.points[point_id] = point
        by_time = sorted(self.points.values(), key=lambda p: p.completed_at or self.at)
        self.points = {p.point_id: p for p in reversed(by_time)}
        return point

    def export(self, point_id: str, request: ExportRequest) -> RestoreExport:
        point = self.points[point_id]
        name = f"{point.vm_name}-{point_id[-4:]}-{request.disk_key}"
        export = RestoreExport(
            name=name,
            point_id=point_id,
            vm_name=point.vm_name,
            disk_key=request.disk_key,
            host="127.0.0.1",
            port=10809 + len(self.exports),
            uri=f"nbd://127.0.0.1:{10809 + len(self.exports)}/{name}",
            created_at=self.at,
            expires_at=self.at + timedelta(seconds=request.ttl_seconds),
        )
        self.exports[name] = export
        point.exports.append(name)
        return export

    def add_restore(
        self,
        point_id: str,
        kind: RestoreKind,
        target: str,
        status: JobStatus = JobStatus.RUNNING,
        done_fraction: float = 0.0,
        rate: float = 0.0,
        restore_id: str | None = None,
        disk_keys: list[int] | None = None,
        error: str | None = None,
    ) -> RestoreJob:
        point = self.points[point_id]
        running = status is JobStatus.RUNNING
        restore_id = restore_id or f"restore-{point.vm_name}-{1790000200 + len(self.restores)}"
        disks = []
        for n, source in enumerate(point.disks):
            if disk_keys is not None and source.disk_key not in disk_keys:
                continue
            total = source.capacity_bytes
            done = int(total * done_fraction)
            unfinished = DiskStatus.COPYING if running else DiskStatus(status.value)
            disks.append(
                RestoreJobDisk(
                    disk_key=source.disk_key,
                    status=DiskStatus.COMPLETED if done >= total else unfinished,
                    bytes_done=done,
                    bytes_total=total,
                    bytes_zero=done // 3,
                    rate_bps=rate * (n + 1) if running else 0.0,
                    source_path=source.qcow2_path,
                    target=(
                        target
                        if kind is RestoreKind.DISK
                        else f"[LocalDS_0] {target}/{target}{'_' + str(n) if n else ''}.vmdk"
                    ),
                    export_name=f"{restore_id}-{source.disk_key}" if running else None,
                    error_message=error if status is JobStatus.FAILED else None,
                )
            )
        job = RestoreJob(
            restore_id=restore_id,
            kind=kind,
            point_id=point_id,
            vm_name=point.vm_name,
            target=target,
            status=status,
            node_id=1 if kind is RestoreKind.VM else None,
            vm_path=f"/DatabanxDC/vm/{target}" if kind is RestoreKind.VM else None,
            format=DiskFormat.RAW if kind is RestoreKind.DISK else None,
            created_at=self.at,
            started_at=self.at,
            completed_at=None if running else self.at,
            error_message=error,
            bytes_done=sum(d.bytes_done for d in disks),
            bytes_total=sum(d.bytes_total for d in disks),
            bytes_zero=sum(d.bytes_zero for d in disks),
            rate_bps=sum(d.rate_bps for d in disks),
            disks=disks,
        )
        self.restores[restore_id] = job
        return job


def _refused(status: int, detail: str) -> JSONResponse:
    return JSONResponse(ErrorAnswer(detail=detail).model_dump(), status_code=status)


def restore_routes(data: StandinRestores) -> APIRouter:
    router = APIRouter()

    @router.get("/restore-points")
    async def restore_points(vm: str | None = None, limit: int = 200) -> list[RestorePoint]:
        points = data.points.values()
        return [p for p in points if vm in (None, p.vm_name, p.vm_path)][:limit]

    @router.get("/restore-points/{point_id}", response_model=None)
    async def restore_point(point_id: str) -> RestorePoint | JSONResponse:
        point = data.points.get(point_id)
        return point or _refused(404, f"no restore point {point_id}")

    @router.delete("/restore-points/{point_id}", response_model=None)
    async def delete_restore_point(point_id: str) -> Response:
        point = data.points.get(point_id)
        if point is None:
            return _refused(404, f"no restore point {point_id}")
        if point.exports:
            return _refused(409, f"restore point {point_id} has a live export")
        del data.points[point_id]
        return Response(status_code=204)

    @router.post("/restore-points/{point_id}/exports", status_code=201, response_model=None)
    async def export_point(point_id: str, request: ExportRequest) -> RestoreExport | JSONResponse:
        if point_id not in data.points:
            return _refused(404, f"no restore point {point_id}")
        return data.export(point_id, request)

    @router.get("/restore-exports")
    async def restore_exports() -> list[RestoreExport]:
        return list(data.exports.values())

    @router.delete("/restore-exports/{name}", status_code=204)
    async def unexport(name: str) -> None:
        export = data.exports.pop(name)
        data.points[export.point_id].exports.remove(name)

    @router.post("/restores/disk", status_code=202)
    async def restore_disk(request: DiskRestoreRequest) -> RestoreJob:
        return data.add_restore(
            request.point_id, RestoreKind.DISK, request.path, disk_keys=[request.disk_key]
        )

    @router.post("/restores/vm", status_code=202, response_model=None)
    async def restore_vm(request: VMRestoreRequest) -> RestoreJob | JSONResponse:
        name = request.overwrite or request.name or ""
        if data.vm_named(name) is not None and request.overwrite != name:
            return _refused(409, f"a VM named {name} already exists")
        return data.add_restore(request.point_id, RestoreKind.VM, name)

    @router.get("/restores")
    async def restores() -> list[RestoreJob]:
        return list(data.restores.values())

    @router.get("/restores/{restore_id}")
    async def restore(restore_id: str) -> RestoreJob:
        return data.restores[restore_id]

    @router.delete("/restores/{restore_id}")
    async def cancel_restore(restore_id: str) -> RestoreJob:
        job = data.restores[restore_id]
        job.status, job.completed_at, job.rate_bps = JobStatus.CANCELLED, data.at, 0.0
        data.publish(job)
        return job

    return router
