"""A stand-in hub speaking docs/contracts.md, for the console's frozen-data tests.

Why a stand-in and not the real hub: SVG snapshots need fixed rates and times, and the
CPU benchmark needs an event source faster than any real copy. Flows that exercise the
real system (pilot and terminal tests) run against the real hub on the lab instead.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

TOKEN = "standin-token"
FROZEN_AT = "2026-11-29T09:00:00Z"
MiB = 2**20


def lab_inventory(extra_vms: int = 6, disks_per_vm: int = 2) -> dict[str, Any]:
    """The lab's shape (``sendense inventory --json``): DatabanxDC with pgtest1 (disks
    2000 and 2001) on a standalone host, and DC0 with a two-host cluster and more VMs."""
    entities = [
        _entity("Datacenter", "DatabanxDC", "/DatabanxDC", "datacenter-2", None, "DatabanxDC"),
        _entity(
            "ComputeResource", "DB_H0", "/DatabanxDC/host/DB_H0", "domain-s1", None, "DatabanxDC"
        ),
        _entity(
            "HostSystem",
            "DB_H0",
            "/DatabanxDC/host/DB_H0/DB_H0",
            "host-1",
            "domain-s1",
            "DatabanxDC",
        ),
        _entity("Datacenter", "DC0", "/DC0", "datacenter-3", None, "DC0"),
        _entity("ClusterComputeResource", "DC0_C0", "/DC0/host/DC0_C0", "domain-c1", None, "DC0"),
    ]
    for h in range(2):
        entities.append(
            _entity(
                "HostSystem",
                f"DC0_C0_H{h}",
                f"/DC0/host/DC0_C0/DC0_C0_H{h}",
                f"host-{10 + h}",
                "domain-c1",
                "DC0",
            )
        )
    vms = [_vm("pgtest1", "/DatabanxDC/vm/pgtest1", "vm-101", "host-1", [(2000, 64), (2001, 32)])]
    for i in range(extra_vms):
        folder = "web" if i % 2 else "db"
        disks = [(2000 + d, 16 * (d + 1)) for d in range(disks_per_vm)]
        vms.append(
            _vm(
                f"DC0_VM{i}",
                f"/DC0/vm/{folder}/DC0_VM{i}",
                f"vm-{200 + i}",
                f"host-{10 + i % 2}",
                disks,
            )
        )
    return {"vcenter": "127.0.0.1:8989", "entities": entities, "vms": vms}


def _entity(kind: str, name: str, path: str, moref: str, parent: str | None, dc: str) -> dict:
    return {
        "kind": kind,
        "name": name,
        "path": path,
        "moref": moref,
        "parent": parent,
        "datacenter": dc,
    }


def _vm(name: str, path: str, moref: str, host: str, disks: list[tuple[int, int]]) -> dict:
    return {
        "name": name,
        "path": path,
        "moref": moref,
        "power_state": "poweredOn",
        "guest_os": "otherLinux64Guest",
        "cpus": 2,
        "memory_mb": 4096,
        "cbt_enabled": name == "pgtest1",
        "has_snapshots": False,
        "host": host,
        "datacenter": path.split("/")[1],
        "disks": [
            {
                "key": key,
                "label": f"Hard disk {n + 1}",
                "capacity_bytes": mib * MiB,
                "datastore": "LocalDS_0",
                "file_name": f"[LocalDS_0] {name}/{name}_{n}.vmdk",
                "controller_key": 1000,
                "unit_number": n,
            }
            for n, (key, mib) in enumerate(disks)
        ],
    }


class StandinState:
    """Jobs advance only when ``step`` is called, so tests and the benchmark set the pace."""

    def __init__(self, inventory: dict[str, Any]) -> None:
        self.inventory = inventory
        self.jobs: dict[str, dict[str, Any]] = {}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.queues: list[asyncio.Queue[str]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.no_credential = {"nocred"}

    def vm(self, name: str) -> dict[str, Any] | None:
        return next((v for v in self.inventory["vms"] if v["name"] == name), None)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Callable from any thread: tests step jobs from outside the server's loop."""
        if self.loop is None:
            return
        message = f"event: {kind}\ndata: {json.dumps(data)}\n\n"
        for queue in list(self.queues):
            self.loop.call_soon_threadsafe(queue.put_nowait, message)

    def add_job(
        self,
        vm: dict[str, Any],
        status: str = "running",
        done_fraction: float = 0.0,
        rate: float = 0.0,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        job_id = job_id or f"backup-{vm['name']}-{len(self.jobs) + 1759855798}"
        disks = []
        for n, disk in enumerate(vm["disks"]):
            total = disk["capacity_bytes"]
            done = int(total * done_fraction)
            disks.append(
                {
                    "disk_key": disk["key"],
                    "nbd_port": 10100 + n,
                    "nbd_export_name": f"{vm['name']}-disk{n}",
                    "qcow2_path": f"/repo/{vm['name']}-disk{n}.qcow2",
                    "status": "completed" if done >= total else status,
                    "bytes_done": done,
                    "bytes_total": total,
                    "bytes_zero": done // 4,
                    "rate_bps": rate * (n + 1) if status == "running" else 0.0,
                    "change_id": None,
                    "error_message": None,
                }
            )
        job = {
            "backup_id": job_id,
            "vm_name": vm["name"],
            "vm_context_id": f"ctx-{vm['name']}",
            "repository_id": 1,
            "backup_type": "full",
            "status": status,
            "created_at": FROZEN_AT,
            "started_at": FROZEN_AT,
            "completed_at": None if status == "running" else FROZEN_AT,
            "bytes_done": sum(d["bytes_done"] for d in disks),
            "bytes_total": sum(d["bytes_total"] for d in disks),
            "bytes_zero": sum(d["bytes_zero"] for d in disks),
            "rate_bps": sum(d["rate_bps"] for d in disks),
            "error_message": None,
            "snapshot_kind": "quiesced",
            "disks": disks,
        }
        self.jobs[job_id] = job
        return job

    def step(self, fraction: float = 0.05, rate: float = 40 * MiB) -> None:
        """Advance every running job by ``fraction`` of each disk; publish what changed."""
        for job in self.jobs.values():
            if job["status"] != "running":
                continue
            for disk in job["disks"]:
                if disk["status"] == "completed":
                    continue
                total = disk["bytes_total"]
                disk["bytes_done"] = min(total, disk["bytes_done"] + int(total * fraction))
                disk["bytes_zero"] = disk["bytes_done"] // 4
                disk["rate_bps"] = rate
                disk["status"] = "completed" if disk["bytes_done"] >= total else "running"
                self.publish(
                    "disk",
                    {
                        "job_id": job["backup_id"],
                        **{
                            k: disk[k]
                            for k in (
                                "disk_key",
                                "bytes_done",
                                "bytes_total",
                                "bytes_zero",
                                "rate_bps",
                                "status",
                            )
                        },
                    },
                )
            if all(d["status"] == "completed" for d in job["disks"]):
                job.update(status="completed", completed_at=FROZEN_AT, rate_bps=0.0)
                job["bytes_done"] = job["bytes_total"]
                self.publish("job", job)


def build_app(state: StandinState) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Response:
        if not request.url.path.endswith("/health") and (
            request.headers.get("authorization") != f"Bearer {TOKEN}"
        ):
            return Response('{"detail":"bad token"}', status_code=401)
        response: Response = await call_next(request)
        return response

    api = "/api/v1"

    @app.get(f"{api}/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": "standin"}

    @app.get(f"{api}/vcenters")
    def vcenters() -> list[dict[str, Any]]:
        return [
            {
                "id": 1,
                "name": "lab",
                "host": "127.0.0.1:8989",
                "username": "user",
                "thumbprint": "AB:CD",
            }
        ]

    @app.get(f"{api}/vcenters/{{vcenter_id}}/inventory")
    def inventory(vcenter_id: int) -> dict[str, Any]:
        return state.inventory

    @app.get(f"{api}/repositories")
    def repositories() -> list[dict[str, Any]]:
        return [
            {
                "id": 1,
                "name": "default",
                "path": "/var/lib/sendense/repository",
                "used_bytes": 3 * 2**30,
                "free_bytes": 97 * 2**30,
                "total_bytes": 100 * 2**30,
            }
        ]

    @app.get(f"{api}/nodes")
    def nodes() -> list[dict[str, Any]]:
        return [
            {
                "id": 1,
                "name": "local",
                "url": "http://127.0.0.1:8081",
                "state": "up",
                "tunnel": None,
            }
        ]

    @app.get(f"{api}/vms")
    def vms() -> list[dict[str, Any]]:
        return list(state.contexts.values())

    @app.post(f"{api}/vms")
    async def add_vm(request: Request) -> dict[str, Any]:
        body = await request.json()
        vm = next((v for v in state.inventory["vms"] if v["path"] == body["path"]), None)
        if vm is None:
            raise HTTPException(404, f"no VM at {body['path']}")
        ctx = {
            "context_id": f"ctx-{vm['name']}",
            "vm_name": vm["name"],
            "vm_path": vm["path"],
            "credential_id": None if vm["name"] in state.no_credential else 1,
            "last_backups": [],
        }
        state.contexts[vm["name"]] = ctx
        return ctx

    @app.get(f"{api}/backups")
    def jobs() -> list[dict[str, Any]]:
        return list(state.jobs.values())

    @app.get(f"{api}/backups/{{backup_id}}")
    def job(backup_id: str) -> dict[str, Any]:
        if backup_id not in state.jobs:
            raise HTTPException(404, f"no backup {backup_id}")
        return state.jobs[backup_id]

    @app.get(f"{api}/backups/{{backup_id}}/log")
    def job_log(backup_id: str) -> dict[str, Any]:
        return {
            "lines": [
                f"{FROZEN_AT} {backup_id}: snapshot sendense-{backup_id} quiesced",
                f"{FROZEN_AT} {backup_id}: copying disks",
            ]
        }

    @app.post(f"{api}/backups")
    async def start(request: Request) -> dict[str, Any]:
        body = await request.json()
        vm = state.vm(body["vm_name"])
        ctx = state.contexts.get(body["vm_name"])
        if vm is None or ctx is None:
            raise HTTPException(404, f"VM {body['vm_name']} not found")
        if ctx["credential_id"] is None:
            raise HTTPException(422, "VM context missing credential_id")
        if any(
            j["vm_name"] == vm["name"] and j["status"] == "running" for j in state.jobs.values()
        ):
            raise HTTPException(409, f"VM {vm['name']} already has a running backup")
        job = state.add_job(vm)
        state.publish("job", job)
        return {"backup_id": job["backup_id"], "vm_name": vm["name"], "status": "started"}

    @app.delete(f"{api}/backups/{{backup_id}}")
    def cancel(backup_id: str) -> dict[str, Any]:
        job = state.jobs.get(backup_id)
        if job is None or job["status"] != "running":
            raise HTTPException(409, "job is not running")
        job["status"] = "cancelled"
        state.publish("job", job)
        return job

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


@contextmanager
def running_standin(state: StandinState, port: int) -> Iterator[str]:
    """Serve the stand-in on 127.0.0.1:port in a thread; stop it on exit."""
    config = uvicorn.Config(
        build_app(state), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("stand-in hub did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def stream_forever(state: StandinState, hz: float) -> None:
    """Advance every running job ``hz`` times a second, forever (for the CPU benchmark):
    a disk that reaches its end starts over, so the job never completes."""
    while True:
        for job in state.jobs.values():
            for disk in job["disks"]:
                if disk["bytes_done"] >= disk["bytes_total"]:
                    disk["bytes_done"] = 0
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
    state.add_job(vm, status="running", rate=50 * MiB, job_id="backup-bench-1")
    app = build_app(state)
    if args.hz:

        @app.on_event("startup")
        async def _stream() -> None:
            asyncio.get_running_loop().create_task(stream_forever(state, args.hz))

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
