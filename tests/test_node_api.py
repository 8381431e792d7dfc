"""The node's API on a real ``sendense node`` process, with the real client.

No hub runs here, so the node's reports cannot be delivered: the job stays ``exited``
with its lines waiting, as it would while a tunnel is down.
"""

from __future__ import annotations

from collections.abc import Callable

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
        assert node.get("/api/v1/health").json()["service"] == "node"
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

    logs = svc.home / "logs"
    for path in logs.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(errors="replace"), path
    assert PASSWORD not in svc.node.log()


def test_client_command_line_carries_no_password_and_uses_the_tunnel_host(tmp_path) -> None:
    from engine.node.runner import StartRequest, client_argv

    body = {k: v for k, v in seed_request("backup-pgtest1-2").items()}
    req = StartRequest(**body)  # type: ignore[arg-type]
    argv = client_argv(req, tmp_path / "x.log", "127.0.0.2")
    assert PASSWORD not in " ".join(argv)
    assert argv[argv.index("--vmware-password-file") + 1] == "-"
    assert argv[argv.index("--nbd-targets") + 1] == "2000:nbd://127.0.0.2:10110/pgtest1-disk2000-1"
    assert PASSWORD not in repr(req)
    embedded = client_argv(req, tmp_path / "x.log", "127.0.0.1")
    assert embedded[embedded.index("--nbd-targets") + 1] == body["nbd_targets"]
