"""A backup through the whole system: hub and node processes, the real client, the vcsim
lab, qemu-nbd exports, and qcow2 files compared byte for byte with the lab's disks."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.conftest import wait_for
from tests.fixtures.backups import (
    SLOW_MIB_S,
    assert_exports_gone,
    assert_identical,
    assert_no_snapshot,
    start,
)
from tests.fixtures.lab import LabRegistration
from tests.fixtures.services import Services


def test_backup_of_pgtest1_completes_with_identical_disks(
    services: Services, lab_registered: LabRegistration
) -> None:
    r = start(services, lab_registered, backup_type="full")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {
        "backup_id",
        "vm_context_id",
        "vm_name",
        "disk_results",
        "nbd_targets_string",
        "status",
    }
    assert answer["status"] == "started"
    assert answer["vm_name"] == "pgtest1"
    assert answer["vm_context_id"] == lab_registered.context_id
    assert answer["backup_id"].startswith("backup-pgtest1-")
    disks = answer["disk_results"]
    assert [d["disk_id"] for d in disks] == [2000, 2001]
    assert len({d["nbd_port"] for d in disks}) == 2
    assert len({d["nbd_export_name"] for d in disks}) == 2
    assert len({d["qcow2_path"] for d in disks}) == 2
    assert all(d["status"] == "qemu_started" and d["qemu_nbd_pid"] > 0 for d in disks)
    assert all(d["nbd_port"] in services.nbd_ports for d in disks)
    assert answer["nbd_targets_string"] == ",".join(
        f"{d['disk_id']}:nbd://127.0.0.1:{d['nbd_port']}/{d['nbd_export_name']}" for d in disks
    )

    job = services.wait_job(answer["backup_id"])
    assert job["status"] == "completed", job["error_message"]
    assert job["error_message"] is None
    assert [d["status"] for d in job["disks"]] == ["completed", "completed"]
    assert all(d["qcow2_size_bytes"] > 0 for d in job["disks"])
    assert job["bytes_done"] == job["bytes_total"] > 0
    assert job["snapshot_kind"] in ("quiesced", "crash-consistent")
    assert_identical(answer, lab_registered)
    assert_exports_gone(services, answer, lab_registered)
    assert_no_snapshot(lab_registered)
    log = services.home / "logs" / f"backup-{answer['backup_id']}.log"
    assert log.exists()
    assert lab_registered.lab.password not in log.read_text()
    assert lab_registered.lab.password not in services.node.log()
    assert lab_registered.lab.password not in services.hub.log()
    # pgtest1 has CBT on: each disk's change id is recorded, and becomes the VM's base.
    change_ids = {d["disk_key"]: d["change_id"] for d in job["disks"]}
    assert all(change_ids.values())
    with services.client() as api:
        vm = next(v for v in api.get("/api/v1/vms").json() if v["vm_name"] == "pgtest1")
    assert {d["disk_key"]: d["change_id"] for d in vm["disks"]} == change_ids
    assert vm["last_backups"][0]["backup_id"] == answer["backup_id"]


def test_second_backup_of_a_running_vm_is_409(
    services: Services, lab_registered: LabRegistration
) -> None:
    first = start(services, lab_registered, max_rate_mib=SLOW_MIB_S)
    assert first.status_code == 200, first.text
    second = start(services, lab_registered)
    assert second.status_code == 409
    assert "already has a backup running" in second.json()["detail"]
    with services.client() as api:
        cancelled = api.delete(f"/api/v1/backups/{first.json()['backup_id']}").json()
    assert cancelled["status"] == "cancelled"


def test_concurrent_starts_of_one_vm_give_one_job(
    services: Services, lab_registered: LabRegistration
) -> None:
    results: list[httpx.Response] = []

    def post() -> None:
        results.append(start(services, lab_registered, max_rate_mib=SLOW_MIB_S))

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409, 409], [r.text for r in results]
    ok = next(r for r in results if r.status_code == 200).json()
    with services.client() as api:
        assert api.delete(f"/api/v1/backups/{ok['backup_id']}").json()["status"] == "cancelled"


def test_cancel_removes_the_snapshot_stops_exports_and_keeps_no_restore_point(
    services: Services, lab_registered: LabRegistration
) -> None:
    answer = start(services, lab_registered, max_rate_mib=SLOW_MIB_S).json()
    backup_id = answer["backup_id"]
    # Cancel once the copy is under way (some bytes have arrived).
    wait_for(
        lambda: services.wait_job(backup_id, ("running",))["bytes_done"] > 0,
        timeout=30,
        what="the copy to start",
    )
    cancel = services.sendense("backup", "cancel", backup_id)
    assert cancel.returncode == 0, cancel.stderr
    job = services.wait_job(backup_id)
    assert job["status"] == "cancelled"
    assert_exports_gone(services, answer, lab_registered)
    assert_no_snapshot(lab_registered)
    assert not any(Path(d["qcow2_path"]).exists() for d in answer["disk_results"])
    with services.client() as api:
        again = api.delete(f"/api/v1/backups/{backup_id}")
    assert again.status_code == 409


def test_dying_export_fails_the_job_with_qemu_nbd_message(
    services: Services, lab_registered: LabRegistration
) -> None:
    answer = start(services, lab_registered, max_rate_mib=SLOW_MIB_S).json()
    victim = answer["disk_results"][1]
    subprocess.run(["kill", "-KILL", str(victim["qemu_nbd_pid"])], check=True)
    job = services.wait_job(answer["backup_id"])
    assert job["status"] == "failed"
    assert "qemu-nbd" in job["error_message"]
    assert str(victim["disk_id"]) in job["error_message"]
    assert_exports_gone(services, answer, lab_registered)
    assert_no_snapshot(lab_registered)


def test_cli_backup_wait_follows_events_to_the_end(
    services: Services, lab_registered: LabRegistration
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    subscribed = threading.Event()

    def listen() -> None:
        timeout = httpx.Timeout(30.0, connect=3.0)
        with (
            services.client(timeout=timeout) as api,
            connect_sse(api, "GET", "/api/v1/events") as source,
        ):
            subscribed.set()
            for sse in source.iter_sse():
                data = json.loads(sse.data)
                events.append((sse.event, data))
                if sse.event == "job" and data["status"] in ("completed", "failed"):
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert subscribed.wait(10)
    run = services.sendense(
        "backup",
        "start",
        "pgtest1",
        "--repo",
        str(lab_registered.repository_id),
        "--max-rate",
        "8",
        "--wait",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "status: completed" in run.stdout
    listener.join(30)
    assert not listener.is_alive()
    assert events[-1][1]["status"] == "completed"
    assert {kind for kind, _ in events} == {"job", "disk"}
    assert {data["disk_key"] for kind, data in events if kind == "disk"} == {2000, 2001}
    backup_id = events[-1][1]["backup_id"]
    assert {data["backup_id"] for kind, data in events if kind == "disk"} == {backup_id}
    shown = services.sendense("backup", "show", backup_id)
    assert shown.returncode == 0 and "status: completed" in shown.stdout
    listed = services.sendense("backup", "list", "--vm", "pgtest1")
    assert backup_id in listed.stdout


def wait_copying(svc: Services, backup_id: str) -> None:
    wait_for(
        lambda: svc.wait_job(backup_id, ("running",))["bytes_done"] > 0,
        timeout=30,
        what="the copy to start",
    )


def test_restarted_hub_follows_a_running_job_to_the_end(
    services: Services, lab_registered: LabRegistration
) -> None:
    answer = start(services, lab_registered, max_rate_mib=SLOW_MIB_S).json()
    wait_copying(services, answer["backup_id"])
    services.hub.stop(signal.SIGKILL)  # a crash: nothing is tidied on the way out
    services.start(services.hub)
    assert "followed on" in services.hub.log()
    job = services.wait_job(answer["backup_id"])
    assert job["status"] == "completed", job["error_message"]
    assert_identical(answer, lab_registered)
    assert_exports_gone(services, answer, lab_registered)


def test_restarted_hub_fails_a_job_its_node_no_longer_runs(
    services: Services, lab_registered: LabRegistration
) -> None:
    answer = start(services, lab_registered, max_rate_mib=SLOW_MIB_S).json()
    wait_copying(services, answer["backup_id"])
    services.hub.stop(signal.SIGKILL)
    services.node.stop()  # cancels its client, which removes the snapshot
    services.start(services.hub)
    job = services.wait_job(answer["backup_id"])
    assert job["status"] == "failed"
    assert job["error_message"].startswith("hub restarted: ")
    assert "unreachable" in job["error_message"]
    assert_exports_gone(services, answer, lab_registered)
    assert not any(Path(d["qcow2_path"]).exists() for d in answer["disk_results"])
    assert_no_snapshot(lab_registered)


def test_refused_vcenter_login_fails_the_job_with_the_reason_and_leaves_nothing(
    services: Services, lab_registered: LabRegistration, settings: Any
) -> None:
    from engine.credentials import VMwareCredentialService
    from engine.db.models import VMReplicationContext
    from engine.db.session import session_scope

    lab = lab_registered.lab
    with session_scope(settings.db_url) as s:
        wrong = VMwareCredentialService(s, settings.key_path).add(
            host=lab.host,
            username=lab.user,
            password="not-the-password",
            thumbprint=lab.thumbprint,
            name="wrong",
        )
        ctx = s.get(VMReplicationContext, lab_registered.context_id)
        assert ctx is not None
        ctx.credential_id = wrong.id
    answer = start(services, lab_registered).json()
    job = services.wait_job(answer["backup_id"])
    assert job["status"] == "failed"
    assert "login" in job["error_message"].lower() or "refused" in job["error_message"]
    assert "not-the-password" not in json.dumps(job)
    assert_exports_gone(services, answer, lab_registered)
    assert not any(Path(d["qcow2_path"]).exists() for d in answer["disk_results"])
    with services.client() as api:
        lines = api.get(f"/api/v1/backups/{answer['backup_id']}/log").json()["lines"]
    assert lines
    assert not any("not-the-password" in line for line in lines)
    failed = services.sendense("backup", "list", "--status", "failed")
    assert answer["backup_id"] in failed.stdout


@pytest.mark.mariadb
def test_backup_with_the_hub_on_mariadb(
    mariadb_home: str, services: Services, lab_registered: LabRegistration
) -> None:
    """The fleet set-up: the same backup with the hub's database on MariaDB."""
    assert services.env["SENDENSE_DATABASE_URL"] == mariadb_home
    answer = start(services, lab_registered).json()
    job = services.wait_job(answer["backup_id"])
    assert job["status"] == "completed", job["error_message"]
    assert_identical(answer, lab_registered)
    assert_exports_gone(services, answer, lab_registered)


@pytest.fixture
def mariadb_home(mariadb: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's settings (and the services it starts) on a fresh MariaDB database."""
    from engine.config import get_settings

    url: str = mariadb.new_database()
    monkeypatch.setenv("SENDENSE_DATABASE_URL", url)
    get_settings.cache_clear()
    return url
