"""Two real ``sendense node`` processes serving one hub on the lab: backups started at
once spread over both (least loaded first), and a node that goes away mid-run fails its
running job with the heartbeat's reason, leaves no export behind, and new work goes to
the node that is left.

The fleet's settings are small (a heartbeat every 0.5 s, down after 3 s), so losing a
node takes seconds; the tests wait for conditions, never for fixed times.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_for
from tests.fixtures.backups import assert_exports_gone, assert_no_snapshot
from tests.fixtures.lab import LabRegistration
from tests.fixtures.services import Service, Services, processes_mentioning

pytestmark = pytest.mark.slow

FAST_FLEET = {
    "SENDENSE_FLEET__HEARTBEAT_SECONDS": "0.5",
    "SENDENSE_FLEET__DOWN_AFTER_SECONDS": "3",
}
# The simulator's VMs: one 1 MiB disk each, so four backups cost the lab little.
SMALL_VMS = (
    "/DC0/vm/DC0_C0_RP0_VM0",
    "/DC0/vm/DC0_C0_RP0_VM1",
    "/DC0/vm/DC0_H0_VM0",
    "/DC0/vm/DC0_H0_VM1",
)
# Slow enough that every job still runs when the next one starts (1 MiB in ~4 s), and that
# pgtest1 (8 and 13 MiB) runs for many seconds after its copy began.
CRAWL_MIB_S = 0.25
SLOW_MIB_S = 0.5


@dataclass
class Fleet:
    svc: Services
    nodes: dict[str, Service]  # by the name the hub knows each node under
    reg: LabRegistration

    def backup(self, **request: Any) -> dict[str, Any]:
        with self.svc.client() as api:
            r = api.post(
                "/api/v1/backups", json={"repository_id": self.reg.repository_id, **request}
            )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def job(self, backup_id: str) -> dict[str, Any]:
        with self.svc.client() as api:
            return dict(api.get(f"/api/v1/backups/{backup_id}").json())

    def node_states(self) -> dict[str, dict[str, Any]]:
        with self.svc.client() as api:
            return {n["name"]: n for n in api.get("/api/v1/nodes").json()}


@pytest.fixture
def fleet(services_factory: Callable[..., Services], lab_registered: LabRegistration) -> Fleet:
    """The hub with its default node (``local``) and a second node, ``node-b``, on its own
    port with the same hub URL and token, registered through the API; the small VMs'
    contexts added."""
    svc = services_factory(extra_env=FAST_FLEET)
    port = free_port()
    second = Service(
        "node",
        f"http://127.0.0.1:{port}",
        {**svc.env, "SENDENSE_NODE__PORT": str(port), "SENDENSE_NODE__NAME": "node-b"},
        svc.home / "test-logs" / "node-b.log",
    )
    svc.start(second)
    with svc.client() as api:
        r = api.post("/api/v1/nodes", json={"name": "node-b", "url": second.url})
        assert r.status_code == 201, r.text
        for path in SMALL_VMS:
            body = {"vcenter_id": lab_registered.credential_id, "path": path}
            r = api.post("/api/v1/vms", json=body)
            assert r.status_code == 200, r.text
    fleet = Fleet(svc, {"local": svc.node, "node-b": second}, lab_registered)
    wait_for(
        lambda: all(n["version"] for n in fleet.node_states().values()),
        timeout=20,
        what="both nodes to answer the heartbeat",
    )
    return fleet


def test_two_nodes_share_backups_started_at_once(fleet: Fleet) -> None:
    answers = [fleet.backup(vm_path=path, max_rate_mib=CRAWL_MIB_S) for path in SMALL_VMS]
    picked = [fleet.job(a["backup_id"])["node_name"] for a in answers]
    # Each start went to the node with fewer of them running: both nodes took two.
    assert sorted(picked) == ["local", "local", "node-b", "node-b"], picked
    busy = fleet.node_states()
    assert (busy["local"]["jobs_active"], busy["node-b"]["jobs_active"]) == (2, 2)
    jobs = [fleet.svc.wait_job(a["backup_id"], timeout=120) for a in answers]
    assert [j["status"] for j in jobs] == ["completed"] * 4, [j["error_message"] for j in jobs]
    assert sorted(j["node_name"] for j in jobs) == sorted(picked)
    done = fleet.node_states()
    for name in ("local", "node-b"):
        assert done[name]["jobs_active"] == 0
        assert done[name]["bytes_last_hour"] >= 2 * 1024 * 1024, done[name]
    for answer in answers:
        assert_exports_gone(fleet.svc, answer)


def test_a_node_going_away_mid_run_fails_its_job_and_new_work_goes_to_the_other(
    fleet: Fleet,
) -> None:
    answer = fleet.backup(vm_name="pgtest1", max_rate_mib=SLOW_MIB_S)
    backup_id = answer["backup_id"]
    victim = fleet.job(backup_id)["node_name"]
    survivor = next(name for name in fleet.nodes if name != victim)
    wait_for(lambda: fleet.job(backup_id)["bytes_done"] > 0, timeout=30, what="the copy to start")
    fleet.nodes[victim].stop(signal.SIGKILL)
    killed = time.monotonic()

    job = fleet.svc.wait_job(backup_id, timeout=60)
    print(f"failed {time.monotonic() - killed:.1f} s after the kill: {job['error_message']}")
    assert job["status"] == "failed"
    assert job["error_message"].startswith(f"node {victim}: no heartbeat for "), job
    assert_exports_gone(fleet.svc, answer, fleet.reg)
    assert not any(Path(d["qcow2_path"]).exists() for d in answer["disk_results"])
    wait_for(
        lambda: processes_mentioning(backup_id) == [],
        timeout=30,
        what="the gone node's client to end once its exports were stopped",
    )
    wait_for(lambda: _no_snapshot(fleet.reg), timeout=30, what="the snapshot to be removed")

    states = fleet.node_states()
    assert states[victim]["state"] == "down"
    assert states[victim]["error"].startswith(f"node {victim}: no heartbeat for ")
    assert states[survivor]["state"] == "up"
    after = fleet.backup(vm_path=SMALL_VMS[0])
    assert fleet.job(after["backup_id"])["node_name"] == survivor
    done = fleet.svc.wait_job(after["backup_id"], timeout=60)
    assert done["status"] == "completed", done["error_message"]


def _no_snapshot(reg: LabRegistration) -> bool:
    try:
        assert_no_snapshot(reg)
    except AssertionError:
        return False
    return True
