"""A backup with the node on the far side of ``sendense tunnel`` and a real OpenSSH sshd.

Hub, node and tunnel share this machine, so the node side of the tunnel listens on
127.0.0.2: the node reaches the hub's API and exports only at 127.0.0.2 (the tunnel's
local forwards), and the hub reaches the node only at the tunnel's remote forward.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.vcenter import find_vm, list_snapshots
from tests.conftest import wait_for
from tests.fixtures.backups import (
    SLOW_MIB_S,
    assert_exports_gone,
    assert_identical,
    assert_no_snapshot,
    start,
)
from tests.fixtures.lab import LabRegistration
from tests.fixtures.services import Service, Services, free_port
from tests.fixtures.sshd import SshServer

NODE_SIDE = "127.0.0.2"


def tunnel_up(home: Path) -> bool:
    import json

    try:
        return json.loads((home / "run" / "tunnel.json").read_text()).get("state") == "up"
    except (FileNotFoundError, ValueError):
        return False


@pytest.fixture
def tunnelled(
    services_factory: Callable[..., Services],
    lab_registered: LabRegistration,
    sshd: SshServer,
) -> Services:
    """Hub, node and tunnel; the hub knows the node only at the tunnel's remote forward."""
    remote_node_port = free_port()
    svc = services_factory(hub=False, node=False)
    hub_port = svc.hub.url.rsplit(":", 1)[1]
    svc.env.update(sshd.tunnel_env())
    svc.env.update(
        {
            "SENDENSE_TUNNEL__LOCAL_HOST": NODE_SIDE,
            "SENDENSE_TUNNEL__REMOTE_NODE_PORT": str(remote_node_port),
            "SENDENSE_TUNNEL__RECONNECT_MIN_SECONDS": "0.2",
            "SENDENSE_TUNNEL__RECONNECT_MAX_SECONDS": "1",
            "SENDENSE_TUNNEL__KEEPALIVE_SECONDS": "2",
            "SENDENSE_NODE__HUB_URL": f"http://{NODE_SIDE}:{hub_port}",
        }
    )
    added = svc.sendense(
        "nodes", "add", "--name", "far", "--url", f"http://127.0.0.1:{remote_node_port}"
    )
    assert added.returncode == 0, added.stderr
    tunnel = Service(
        "tunnel",
        "",
        svc.env,
        svc.home / "test-logs" / "tunnel.log",
        args=("run",),
        ready=lambda: tunnel_up(svc.home),
    )
    svc.start(svc.hub, svc.node)
    svc.start(tunnel)
    svc.tunnel = tunnel  # type: ignore[attr-defined]
    return svc


def test_tunnelled_backup_completes_with_identical_disks(
    tunnelled: Services, lab_registered: LabRegistration
) -> None:
    with tunnelled.client() as api:
        nodes = api.get("/api/v1/nodes").json()
    assert [(n["name"], n["state"]) for n in nodes] == [("far", "up")]
    assert nodes[0]["tunnel"]["state"] == "up"
    r = start(tunnelled, lab_registered)
    assert r.status_code == 200, r.text
    answer = r.json()
    job = tunnelled.wait_job(answer["backup_id"])
    assert job["status"] == "completed", job["error_message"]
    assert_identical(answer, lab_registered)
    assert_exports_gone(tunnelled, answer, lab_registered)
    assert_no_snapshot(lab_registered)


@pytest.mark.slow
def test_tunnel_killed_halfway_never_completes_with_wrong_data(
    tunnelled: Services, lab_registered: LabRegistration, sshd: SshServer
) -> None:
    answer = start(tunnelled, lab_registered, max_rate_mib=SLOW_MIB_S).json()
    backup_id = answer["backup_id"]
    wait_for(
        lambda: tunnelled.wait_job(backup_id, ("running",))["bytes_done"] > 0,
        timeout=30,
        what="the copy to start",
    )
    sshd.drop_connections()
    wait_for(lambda: tunnel_up(tunnelled.home), timeout=30, what="the tunnel to come back")
    job = tunnelled.wait_job(backup_id, timeout=180)
    print(f"after the tunnel dropped: {job['status']}: {job['error_message']}")
    if job["status"] == "completed":
        assert_identical(answer, lab_registered)
    else:
        assert job["status"] == "failed"
        assert job["error_message"]
        assert not any(Path(d["qcow2_path"]).exists() for d in answer["disk_results"])
    assert_exports_gone(tunnelled, answer, lab_registered)
    with lab_registered.lab.connect() as vc:
        wait_for(
            lambda: list_snapshots(vc, find_vm(vc, lab_registered.pgtest1.path)) == [],
            timeout=30,
            what="the snapshot to be removed",
        )
