"""The queue's limits under many jobs, on a real hub process with two stand-in nodes
(tests/fixtures/standin_node.py): 34 VMs on 3 ESXi hosts and 2 datastores queued at
once, dispatched within the limits, which are checked from the nodes' side (what they
ran at once); the queue's positions move as jobs start; a queued job is cancelled; a VM
is never queued twice; every job ends completed and no qemu-nbd is left.

The hub's exports and qcow2 files are real (qemu-nbd, qemu-img); the nodes copy nothing,
and the contexts are written into the database (vCenter is never asked: the jobs are
fulls of VMs with no point yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import Settings
from engine.hub.queue.dispatch import Limits, Load, NodeSlot, QueuedJob, assign
from tests.conftest import wait_for
from tests.fixtures.services import processes_mentioning
from tests.fixtures.standin_node import (
    VCENTER,
    SeededVM,
    Span,
    StandinFleet,
    seed_vms,
    standin_fleet,
)

FINISHED = ("completed", "failed", "cancelled")
DISKS_PER_HOST, DISKS_PER_DATASTORE, JOBS_TOTAL = 2, 3, 5
NODE_JOBS, NODE_DISKS = 2, 3
LIMITS = {
    "SENDENSE_QUEUE__DISKS_PER_HOST": str(DISKS_PER_HOST),
    "SENDENSE_QUEUE__DISKS_PER_DATASTORE": str(DISKS_PER_DATASTORE),
    "SENDENSE_QUEUE__JOBS_TOTAL": str(JOBS_TOTAL),
    "SENDENSE_QUEUE__DISPATCH_SECONDS": "0.2",
    "SENDENSE_FLEET__HEARTBEAT_SECONDS": "0.5",
}


@pytest.fixture
def fleet(settings: Settings, sendense_home: Path) -> Iterator[StandinFleet]:
    """A hub (not started yet) with the queue's limits set low, and two stand-in nodes
    registered."""
    names = ("standin-a", "standin-b")
    with standin_fleet(
        settings, sendense_home, names, extra_env=LIMITS, max_jobs=NODE_JOBS, max_disks=NODE_DISKS
    ) as made:
        yield made


def queued(api: httpx.Client) -> list[dict[str, Any]]:
    answer = api.get("/api/v1/backups", params={"status": "queued", "limit": 1000})
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def every_job(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {j["backup_id"]: j for j in api.get("/api/v1/backups", params={"limit": 1000}).json()}


@dataclass
class Waves:
    """Drives the fleet in waves: wait until the hub has started all that the limits let
    start (worked out with the pure ``assign`` on what the nodes run and the queue), then
    let every running job finish; again, until every job ended."""

    fleet: StandinFleet
    api: httpx.Client
    vms: dict[str, SeededVM]

    def __post_init__(self) -> None:
        self.slots = [
            NodeSlot(i + 1, n.name, NODE_JOBS, NODE_DISKS) for i, n in enumerate(self.fleet.nodes)
        ]
        self.limits = Limits(
            JOBS_TOTAL, len(self.fleet.svc.nbd_ports), DISKS_PER_HOST, DISKS_PER_DATASTORE
        )

    def _shape(self, backup_id: str, vm_name: str, keys: Iterable[int] | None = None) -> QueuedJob:
        vm = self.vms[vm_name]
        disks = tuple(vm.datastores[k] for k in (vm.datastores if keys is None else keys))
        return QueuedJob(backup_id, VCENTER, vm.host, disks)

    def saturated(self) -> bool:
        """Nothing more fits beside what the nodes run. The nodes are read first: a job
        that moves in between is in neither, and the wait goes on."""
        ids = {slot.name: slot.id for slot in self.slots}
        running = [
            (self._shape(s.job_id, s.vm_name, s.disk_keys), ids[s.node])
            for s in self.fleet.running()
        ]
        line = [self._shape(j["backup_id"], j["vm_name"]) for j in queued(self.api)]
        return not assign(line, self.slots, Load.of(running), self.limits)

    def ended(self) -> bool:
        return all(j["status"] in FINISHED for j in every_job(self.api).values())

    def full(self) -> None:
        wait_for(lambda: self.ended() or self.saturated(), timeout=30, what="a full wave")

    def run_out(self) -> None:
        for _ in range(100):
            self.full()
            if self.ended():
                return
            if not self.fleet.release_all():  # the last ones start or end in the hub
                wait_for(
                    lambda: self.ended() or self.fleet.running(), timeout=30, what="the last jobs"
                )
        raise AssertionError("the queue did not run out in 100 waves")


def host(span: Span, vms: dict[str, SeededVM]) -> list[tuple[str, int]]:
    return [(vms[span.vm_name].host, len(span.disk_keys))]


def test_many_queued_jobs_run_within_every_limit_seen_from_the_nodes(
    fleet: StandinFleet, settings: Settings
) -> None:
    repo_id, seeded = seed_vms(settings, 36)
    vms = {vm.name: vm for vm in seeded}
    queue_now, later = seeded[:34], seeded[34:]
    fleet.svc.start(fleet.svc.hub)
    with fleet.svc.client() as api:
        body = {
            "backups": [
                {"vm_name": vm.name, "repository_id": repo_id, "backup_type": "full"}
                for vm in queue_now
            ]
        }
        answer = api.post("/api/v1/backups/queue", json=body)
        assert answer.status_code == 200, answer.text
        jobs = answer.json()
        assert [j["vm_name"] for j in jobs] == [vm.name for vm in queue_now]
        assert {j["status"] for j in jobs} == {"queued"}
        assert [j["queue_position"] for j in jobs] == list(range(1, 35))
        assert all(j["node_id"] is None and j["disks"] == [] for j in jobs)
        ids = [j["backup_id"] for j in jobs]

        # The first wave is on the nodes; the rest moved up, in its order.
        waves = Waves(fleet, api, vms)
        waves.full()
        waiting = queued(api)
        assert [j["queue_position"] for j in waiting] == list(range(1, len(waiting) + 1))
        assert [j["backup_id"] for j in waiting] == ids[34 - len(waiting) :] or [
            j["backup_id"] for j in waiting
        ] == [i for i in ids if i in {j["backup_id"] for j in waiting}]
        assert len(waiting) < 34 and waiting[-1]["backup_id"] == ids[-1]
        shown = api.get(f"/api/v1/backups/{ids[-1]}").json()
        assert shown["queue_position"] == len(waiting)

        cancelled = api.delete(f"/api/v1/backups/{ids[-1]}")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["completed_at"] and cancelled.json()["queue_position"] is None

        # A VM is never queued twice: the whole request is refused, nothing stored.
        first = waiting[0]
        twice = api.post(
            "/api/v1/backups/queue",
            json={"backups": [
                {"vm_name": later[0].name, "repository_id": repo_id},
                {"vm_name": first["vm_name"], "repository_id": repo_id},
            ]},
        )  # fmt: skip
        assert twice.status_code == 409
        assert twice.json()["detail"] == (
            f"VM {first['vm_name']} already has a backup queued ({first['backup_id']})"
        )
        doubled = api.post(
            "/api/v1/backups/queue",
            json={"backups": [{"vm_name": later[1].name, "repository_id": repo_id}] * 2},
        )
        assert doubled.status_code == 422
        assert doubled.json()["detail"] == f"VM {later[1].name} is asked for twice"
        for vm in later:
            assert api.get("/api/v1/backups", params={"vm_name": vm.name}).json() == []

        waves.run_out()
        final = every_job(api)

    done = [final[i] for i in ids[:-1]]
    assert {j["status"] for j in done} == {"completed"}, [
        (j["backup_id"], j["status"], j["error_message"]) for j in done
    ]
    assert final[ids[-1]]["status"] == "cancelled"
    assert {j["node_name"] for j in done} == {"standin-a", "standin-b"}
    assert all(n.errors == [] for n in fleet.nodes)
    timeline = fleet.timeline
    assert sorted(s.job_id for s in timeline.spans) == sorted(ids[:-1])  # each once

    def datastores(span: Span) -> list[tuple[str, int]]:
        return [(vms[span.vm_name].datastores[key], 1) for key in span.disk_keys]

    def node_disks(span: Span) -> list[tuple[str, int]]:
        return [(span.node, len(span.disk_keys))]

    def node_jobs(span: Span) -> list[tuple[str, int]]:
        return [(span.node, 1)]

    def hub_jobs(span: Span) -> list[tuple[str, int]]:
        return [("hub", 1)]

    def hosts(span: Span) -> list[tuple[str, int]]:
        return host(span, vms)

    assert timeline.breaches(hosts, DISKS_PER_HOST) == []
    assert timeline.breaches(datastores, DISKS_PER_DATASTORE) == []
    assert timeline.breaches(node_disks, NODE_DISKS) == []
    assert timeline.breaches(node_jobs, NODE_JOBS) == []
    assert timeline.breaches(hub_jobs, JOBS_TOTAL) == []
    # ... and they were what held the jobs back: each was reached.
    assert max(timeline.peak(hosts, shared=True).values()) == DISKS_PER_HOST
    assert set(timeline.peak(node_jobs).values()) == {NODE_JOBS}
    assert processes_mentioning(str(settings.home), "qemu-nbd") == []
