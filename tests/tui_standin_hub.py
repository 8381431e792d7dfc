"""A stand-in hub for the console's frozen-data tests, answering with the contract's
models (``engine.contract``), so the console meets the shapes the real hub sends.

Why a stand-in and not the real hub: SVG snapshots need fixed rates and times, and the
CPU benchmark needs an event source faster than any real copy. Flows that exercise the
real system (pilot and terminal tests) run against the real hub on the lab instead. It
answers only what those tests and the benchmark ask: the lists, the inventory, the jobs
with their log, VM contexts, a backup's preview, start, queue and cancel, CBT and merges
(tests/tui_standin_backups.py), restore points with their exports and restore jobs,
policies with their runs, retention plans and the nodes with their load
(tests/tui_standin_policies.py), and the event stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from engine.contract.hub import (
    DiskEvent,
    ErrorAnswer,
    Health,
    Job,
    JobDisk,
    JobLog,
    Repository,
    VCenter,
)
from engine.contract.inventory import DiskInfo, EntityInfo, Inventory, VMInfo
from engine.contract.restore import RestoreJob
from engine.contract.status import BackupType, DiskStatus, JobStatus, SnapshotKind
from tests.tui_standin_backups import StandinBackups, backup_routes
from tests.tui_standin_files import StandinFiles, file_routes
from tests.tui_standin_policies import StandinPolicies, policy_routes
from tests.tui_standin_restores import StandinRestores, restore_routes

TOKEN = "standin-token"
FROZEN_AT = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
MiB = 2**20


def lab_inventory(extra_vms: int = 6, disks_per_vm: int = 2) -> Inventory:
    """The lab's shape: DatabanxDC with pgtest1 (disks 2000 and 2001) on a standalone
    host, and DC0 with a two-host cluster and more VMs."""
    entities = [
        _entity("Datacenter", "/DatabanxDC", "datacenter-2", None),
        _entity("ComputeResource", "/DatabanxDC/host/DB_H0", "domain-s1", None),
        _entity("HostSystem", "/DatabanxDC/host/DB_H0/DB_H0", "host-1", "domain-s1"),
        _entity("Datacenter", "/DC0", "datacenter-3", None),
        _entity("ClusterComputeResource", "/DC0/host/DC0_C0", "domain-c1", None),
    ]
    for h in range(2):
        path = f"/DC0/host/DC0_C0/DC0_C0_H{h}"
        entities.append(_entity("HostSystem", path, f"host-{10 + h}", "domain-c1"))
    vms = [_vm("/DatabanxDC/vm/pgtest1", "vm-101", "host-1", [(2000, 64), (2001, 32)])]
    for i in range(extra_vms):
        folder = "web" if i % 2 else "db"
        disks = [(2000 + d, 16 * (d + 1)) for d in range(disks_per_vm)]
        vms.append(_vm(f"/DC0/vm/{folder}/DC0_VM{i}", f"vm-{200 + i}", f"host-{10 + i % 2}", disks))
    return Inventory(vcenter="127.0.0.1:8989", entities=entities, vms=vms)


def _entity(kind: str, path: str, moref: str, parent: str | None) -> EntityInfo:
    name, datacenter = path.rsplit("/", 1)[1], path.split("/")[1]
    return EntityInfo(
        kind=kind, name=name, path=path, moref=moref, parent=parent, datacenter=datacenter
    )


def _vm(path: str, moref: str, host: str, disks: list[tuple[int, int]]) -> VMInfo:
    name = path.rsplit("/", 1)[1]
    return VMInfo(
        name=name,
        path=path,
        moref=moref,
        power_state="poweredOn",
        guest_os="otherLinux64Guest",
        cpus=2,
        memory_mb=4096,
        cbt_enabled=name == "pgtest1",
        has_snapshots=False,
        host=host,
        datacenter=path.split("/")[1],
        disks=[
            DiskInfo(
                key=key,
                label=f"Hard disk {n + 1}",
                capacity_bytes=mib * MiB,
                datastore="LocalDS_0",
                file_name=f"[LocalDS_0] {name}/{name}_{n}.vmdk",
                controller_key=1000,
                unit_number=n,
            )
            for n, (key, mib) in enumerate(disks)
        ],
    )


class StandinState:
    """Jobs advance only when ``step`` is called, so tests and the benchmark set the pace."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.jobs: dict[str, Job] = {}
        self.restore = StandinRestores(self.vm, self.publish, FROZEN_AT)
        self.files = StandinFiles(self.restore)
        self.backups = StandinBackups(
            lambda path: next((v for v in self.inventory.vms if v.path == path), None),
            self.restore,
            self.jobs,
            self.add_job,
            self.publish,
            FROZEN_AT,
        )
        self.policies = StandinPolicies(inventory, self.jobs, self.add_job, FROZEN_AT)
        self.queues: list[asyncio.Queue[str]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def vm(self, name: str) -> VMInfo | None:
        return next((v for v in self.inventory.vms if v.name == name), None)

    def publish(self, event: Job | DiskEvent | RestoreJob) -> None:
        """Callable from any thread: tests step jobs from outside the server's loop."""
        if self.loop is None:
            return
        kind = {Job: "job", DiskEvent: "disk", RestoreJob: "restore"}[type(event)]
        message = f"event: {kind}\ndata: {event.model_dump_json()}\n\n"
        for queue in list(self.queues):
            self.loop.call_soon_threadsafe(queue.put_nowait, message)

    def add_job(
        self,
        vm: VMInfo,
        status: JobStatus = JobStatus.RUNNING,
        done_fraction: float = 0.0,
        rate: float = 0.0,
        job_id: str | None = None,
        policy: str | None = None,
        run_id: int | None = None,
    ) -> Job:
        """A job of ``vm`` in ``status``: a running or finished one on the node ``local``
        with its disks; a queued one without either, last in the queue."""
        job_id = job_id or f"backup-{vm.name}-{len(self.jobs) + 1759855798}"
        running = status is JobStatus.RUNNING
        queued = status is JobStatus.QUEUED
        disks = []
        for n, disk in enumerate([] if queued else vm.disks):
            total = disk.capacity_bytes
            done = int(total * done_fraction)
            disks.append(
                JobDisk(
                    disk_key=disk.key,
                    nbd_port=10100 + n,
                    nbd_export_name=f"{vm.name}-disk{n}",
                    qcow2_path=f"/repo/{vm.name}-disk{n}.qcow2",
                    status=DiskStatus.COMPLETED if done >= total else DiskStatus.COPYING,
                    bytes_done=done,
                    bytes_total=total,
                    bytes_zero=done // 4,
                    rate_bps=rate * (n + 1) if running else 0.0,
                )
            )
        job = Job(
            backup_id=job_id,
            vm_name=vm.name,
            vm_context_id=f"ctx-{vm.name}",
            repository_id=1,
            node_id=None if queued else 1,
            node_name=None if queued else "local",
            backup_type=BackupType.FULL,
            status=status,
            created_at=FROZEN_AT,
            started_at=None if queued else FROZEN_AT,
            completed_at=None if running or queued else FROZEN_AT,
            bytes_done=sum(d.bytes_done for d in disks),
            bytes_total=sum(d.bytes_total for d in disks),
            bytes_zero=sum(d.bytes_zero for d in disks),
            rate_bps=sum(d.rate_bps for d in disks),
            snapshot_kind=None if queued else SnapshotKind.QUIESCED,
            disks=disks,
            queue_position=(
                1 + sum(1 for j in self.jobs.values() if j.status is JobStatus.QUEUED)
                if queued
                else None
            ),
            policy_name=policy,
            policy_run_id=run_id,
        )
        self.jobs[job_id] = job
        return job

    def step(self, fraction: float = 0.05, rate: float = 40 * MiB) -> None:
        """Advance every running job by ``fraction`` of each disk; publish what changed."""
        for job in self.jobs.values():
            if job.status is not JobStatus.RUNNING:
                continue
            for disk in job.disks:
                if disk.status is DiskStatus.COMPLETED:
                    continue
                disk.bytes_done = min(
                    disk.bytes_total, disk.bytes_done + int(disk.bytes_total * fraction)
                )
                disk.bytes_zero = disk.bytes_done // 4
                disk.rate_bps = rate
                done = disk.bytes_done >= disk.bytes_total
                disk.status = DiskStatus.COMPLETED if done else DiskStatus.COPYING
                self.publish(
                    DiskEvent.model_validate({**disk.model_dump(), "backup_id": job.backup_id})
                )
            if all(d.status is DiskStatus.COMPLETED for d in job.disks):
                job.status, job.completed_at, job.rate_bps = JobStatus.COMPLETED, FROZEN_AT, 0.0
                job.bytes_done = job.bytes_total
                self.publish(job)


def build_app(state: StandinState) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Response:
        if not request.url.path.endswith("/health") and (
            request.headers.get("authorization") != f"Bearer {TOKEN}"
        ):
            return Response(ErrorAnswer(detail="bad token").model_dump_json(), status_code=401)
        response: Response = await call_next(request)
        return response

    api = "/api/v1"

    @app.get(f"{api}/health")
    async def health() -> Health:
        return Health(version="standin")

    @app.get(f"{api}/vcenters")
    async def vcenters() -> list[VCenter]:
        return [
            VCenter(id=1, name="lab", host="127.0.0.1:8989", username="user", thumbprint="AB:CD")
        ]

    @app.get(f"{api}/vcenters/{{vcenter_id}}/inventory")
    async def inventory(vcenter_id: int) -> Inventory:
        return state.inventory

    @app.get(f"{api}/repositories")
    async def repositories() -> list[Repository]:
        return [
            Repository(
                id=1,
                name="default",
                path="/var/lib/sendense/repository",
                enabled=True,
                used_bytes=3 * 2**30,
                free_bytes=97 * 2**30,
                total_bytes=100 * 2**30,
            )
        ]

    @app.get(f"{api}/backups")
    async def jobs() -> list[Job]:
        return list(state.jobs.values())

    @app.get(f"{api}/backups/{{backup_id}}/log")
    async def job_log(backup_id: str) -> JobLog:
        at = f"{FROZEN_AT:%Y-%m-%dT%H:%M:%SZ}"
        return JobLog(
            lines=[
                f"{at} {backup_id}: snapshot sendense-{backup_id} quiesced",
                f"{at} {backup_id}: copying disks",
            ]
        )

    app.include_router(backup_routes(state.backups), prefix=api)
    app.include_router(restore_routes(state.restore), prefix=api)
    app.include_router(file_routes(state.files), prefix=api)
    app.include_router(policy_routes(state.policies), prefix=api)

    @app.get(f"{api}/events")
    async def events() -> StreamingResponse:
        state.loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()
        state.queues.append(queue)

        async def stream() -> AsyncIterator[str]:
            try:
                yield ": ping\n\n"
                while True:
                    yield await queue.get()
            finally:
                state.queues.remove(queue)

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


async def stream_forever(state: StandinState, hz: float) -> None:
    """Advance every running job ``hz`` times a second, forever (for the CPU benchmark):
    a disk that reaches its end starts over, so the job never completes."""
    while True:
        for job in state.jobs.values():
            for disk in job.disks:
                if disk.bytes_done >= disk.bytes_total:
                    disk.bytes_done, disk.status = 0, DiskStatus.COPYING
        state.step(fraction=0.001, rate=100 * MiB)
        await asyncio.sleep(1.0 / hz)


def main() -> None:
    """``python -m tests.tui_standin_hub --port P --disks 8 --hz 50``: one running job with
    that many disks, streamed at that rate, in a process of its own (so a benchmark
    measures the console's CPU, not the event source's)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--disks", type=int, default=8)
    parser.add_argument("--hz", type=float, default=0.0, help="0: no events (idle)")
    args = parser.parse_args()
    state = StandinState(lab_inventory(extra_vms=1, disks_per_vm=args.disks))
    vm = state.vm("DC0_VM0")
    assert vm is not None
    state.add_job(vm, rate=50 * MiB, job_id="backup-bench-1")
    app = build_app(state)
    if args.hz:

        @app.on_event("startup")
        async def _stream() -> None:
            asyncio.get_running_loop().create_task(stream_forever(state, args.hz))

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
