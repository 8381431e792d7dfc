"""The node's API on a real ``sendense node`` process, with the real client.

No hub runs here, so the node's reports cannot be delivered: the job stays ``exited``
with its lines waiting, as it would while a tunnel is down.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.contract.node import NodeHealth, NodeJob, StartRequest
from engine.contract.progress import ClientExit, DiskDone, DiskProgress, DiskStarted
from engine.node.relay import coalesce
from engine.node.runner import client_argv
from tests.conftest import wait_for
from tests.fixtures.services import Services, free_port

PASSWORD = "node-test-secret-42"


def seed_request(job_id: str) -> dict[str, object]:
    return {
        "vm_name": "pgtest1",
        "vcenter_host": f"127.0.0.1:{free_port()}",  # nothing listens: the client exits 3
        "vcenter_user": "administrator@vsphere.local",
        "vcenter_password": PASSWORD,
        "vm_path": "/DatabanxDC/vm/pgtest1",
        "nbd_host": "127.0.0.1",
        "nbd_targets": "2000:nbd://127.0.0.1:10110/pgtest1-disk2000-1",
        "job_id": job_id,
        "backup_type": "full",
        "vcenter_thumbprint": "ab" * 32,
    }


def test_start_runs_the_client_and_reports_its_exit(
    services_factory: Callable[..., Services],
) -> None:
    svc = services_factory(hub=False)
    with svc.node_client() as node:
        health = NodeHealth.model_validate_json(node.get("/api/v1/health").content)
        assert health.service == "node"
        assert health.tunnel is not None and health.tunnel.state == "down"  # none runs here
        assert node.get("/api/v1/backups", headers={"Authorization": ""}).status_code == 401

        r = node.post("/api/v1/backup/start", json=seed_request("backup-pgtest1-1"))
        assert r.status_code == 202, r.text
        assert r.json()["job_id"] == "backup-pgtest1-1" and r.json()["pid"] > 0

        again = node.post("/api/v1/backup/start", json=seed_request("backup-pgtest1-1"))
        assert again.status_code == 409

        job = wait_for(
            lambda: (
                (j := node.get("/api/v1/backup/backup-pgtest1-1").json())["exit_code"] is not None
                and j
            ),
            timeout=60,
            what="the client to exit",
        )
        assert job["exit_code"] == 3  # vCenter error, per docs/contracts.md
        assert job["state"] == "exited"  # its report waits for a hub
        assert job["undelivered_events"] >= 1
        assert job["log_file"].endswith("backup-backup-pgtest1-1.log")

        assert node.delete("/api/v1/backup/backup-pgtest1-1").status_code == 409
        assert node.get("/api/v1/backup/nope").status_code == 404
        assert node.delete("/api/v1/backup/nope").status_code == 404

        bad = node.post("/api/v1/backup/start", json={**seed_request("x"), "job_id": "a/b"})
        assert bad.status_code == 422
        assert isinstance(bad.json()["detail"], str)
        assert node.post("/api/v1/backup/start", content=b"{").status_code == 422
        twice = "2000:nbd://127.0.0.1:1/a,2000:nbd://127.0.0.1:2/b"
        bad = node.post("/api/v1/backup/start", json={**seed_request("y"), "nbd_targets": twice})
        assert bad.status_code == 422
        assert "disk key 2000 is given twice" in bad.json()["detail"]

        listed = [NodeJob.model_validate(j) for j in node.get("/api/v1/backups").json()]
        assert [(j.job_id, j.log_tail) for j in listed] == [("backup-pgtest1-1", [])]
        paths = node.get("/openapi.json").json()["paths"]
        for path, operations in paths.items():
            for method, operation in operations.items():
                answers = operation["responses"]
                assert any(s.startswith("2") for s in answers), (method, path)
                if path != "/api/v1/health":
                    assert "401" in answers, (method, path)
        assert {"404", "409"} <= set(paths["/api/v1/backup/{job_id}"]["delete"]["responses"])

    logs = svc.home / "logs"
    for path in logs.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(errors="replace"), path
    assert PASSWORD not in svc.node.log()


def test_client_command_line_carries_no_password_and_uses_the_tunnel_host(tmp_path) -> None:
    body = seed_request("backup-pgtest1-2")
    req = StartRequest.model_validate(body)
    argv = client_argv(req, tmp_path / "x.log", "127.0.0.2")
    assert PASSWORD not in " ".join(argv)
    assert argv[argv.index("--vmware-password-file") + 1] == "-"
    assert argv[argv.index("--nbd-targets") + 1] == "2000:nbd://127.0.0.2:10110/pgtest1-disk2000-1"
    assert PASSWORD not in repr(req)
    embedded = client_argv(req, tmp_path / "x.log", "127.0.0.1")
    assert embedded[embedded.index("--nbd-targets") + 1] == body["nbd_targets"]


def test_relay_coalesce_keeps_last_progress_per_disk_and_every_other_line() -> None:
    job = "backup-vm-1"
    lines = [
        DiskStarted(job_id=job, disk_key=2000, bytes_total=2),
        DiskProgress(job_id=job, disk_key=2000, bytes_done=1, bytes_total=2),
        DiskProgress(job_id=job, disk_key=2001, bytes_done=1, bytes_total=2),
        DiskProgress(job_id=job, disk_key=2000, bytes_done=2, bytes_total=2),
        DiskDone(job_id=job, disk_key=2001, bytes_done=2),
        ClientExit(job_id=job, exit_code=0),
    ]
    assert coalesce(lines) == [lines[0], lines[2], lines[3], lines[4], lines[5]]
