"""A whole VM back into vCenter through the real hub and node, on the vcsim lab: the VM is
made again with the point's recorded configuration, its disks are written as descriptor +
flat files in its datastore folder, byte for byte the lab's source disks; bad input is
one line and a status; a fault anywhere (the node, an export, vCenter) fails the job with
the reason and leaves no export, no process and no half VM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import Settings
from engine.contract.vmconfig import VMConfig
from engine.db.models import BackupJob
from engine.db.session import session_scope
from engine.errors import VMNotFound
from engine.lab import client as lab_client
from engine.node.sources import flat_extent
from engine.vcenter import datastore_file_path, destroy_vm, find_vm, vm_config, vm_info
from tests.conftest import wait_for
from tests.fixtures.backups import SLOW_MIB_S, start
from tests.fixtures.lab import Lab
from tests.fixtures.points import Point, back_up
from tests.fixtures.services import Services, ports_free, processes_mentioning

DC = "/DatabanxDC"
DATASTORE = "DatabanxDS"
FINISHED = ("completed", "failed", "cancelled")
# A point's zero runs are holes that a restore skips: only its data (8 of pgtest1's 21 MiB)
# is copied, so a restore that a test acts on while it runs goes slower than a backup.
SLOW_RESTORE_MIB_S = 0.5


# -- helpers ---------------------------------------------------------------------------


def post_restore(svc: Services, **body: Any) -> httpx.Response:
    with svc.client() as api:
        return api.post("/api/v1/restores/vm", json=body)


def started(svc: Services, **body: Any) -> dict[str, Any]:
    answer = post_restore(svc, **body)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def wait_restore(
    svc: Services, restore_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 90
) -> dict[str, Any]:
    with svc.client() as api:
        return dict(
            wait_for(
                lambda: (
                    (j := api.get(f"/api/v1/restores/{restore_id}").json())["status"] in statuses
                    and j
                ),
                timeout=timeout,
                interval=0.1,
                what=f"restore {restore_id} to be {' or '.join(statuses)}",
            )
        )


def recorded_config(settings: Settings, point_id: str) -> VMConfig:
    with session_scope(settings.db_url) as s:
        row = s.get(BackupJob, point_id)
        assert row is not None and row.vm_config is not None
        return VMConfig.model_validate_json(row.vm_config)


def vm_exists(lab: Lab, path: str) -> bool:
    with lab.connect() as vc:
        try:
            find_vm(vc, path)
        except VMNotFound:
            return False
        return True


def vm_folder(lab: Lab, name: str) -> Path:
    with lab.connect() as vc:
        return datastore_file_path(vc, f"[{DATASTORE}] {name}")


def assert_nothing_left(svc: Services, lab: Lab, restore_id: str, name: str) -> None:
    """No export, no client and no nbdkit, every NBD port free, and no VM of that name,
    nor its folder on the datastore."""
    wait_for(
        lambda: processes_mentioning(restore_id) == [],
        timeout=20,
        what="the restore's client and nbdkit to exit",
    )
    assert processes_mentioning(str(svc.home), "qemu-nbd", "nbdkit") == []
    assert ports_free(svc.nbd_ports)
    assert not vm_exists(lab, f"{DC}/vm/{name}")
    assert not vm_folder(lab, name).exists()


def assert_same_disks(lab: Lab, point: Point, job: dict[str, Any], *, folder: bool = True) -> None:
    """Each disk of the restored VM is a descriptor + flat file in its datastore folder
    (named after the VM, unless it was renamed), the flat file byte for byte the lab's
    disk the point was taken from."""
    source_key = {str(path): key for key, path in point.disks.items()}
    assert len(job["disks"]) == len(point.disks)
    with lab.connect() as vc:
        for disk in job["disks"]:
            descriptor = datastore_file_path(vc, disk["target"])
            flat = flat_extent(descriptor)
            assert flat.parent == descriptor.parent
            if folder:
                assert descriptor.parent == vm_folder(lab, job["target"])
            source = lab.pgtest1.flat[source_key[disk["source_path"]]]
            compare = subprocess.run(
                ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(flat), str(source)],
                capture_output=True,
                text=True,
            )
            assert compare.returncode == 0, compare.stdout + compare.stderr
            # The source's holes stay holes.
            assert flat.stat().st_blocks <= source.stat().st_blocks


@pytest.fixture
def vms(lab: Lab) -> Iterator[set[str]]:
    """Names of the VMs a test restores into; whatever of them is left is removed at the
    end (the lab serves the whole session)."""
    names: set[str] = set()
    yield names
    with lab.connect() as vc:
        for name in names:
            with contextlib.suppress(VMNotFound):
                destroy_vm(vc, find_vm(vc, f"{DC}/vm/{name}")._moId)


def new_name(vms: set[str], what: str) -> str:
    name = f"{what}-{os.getpid()}-{len(vms)}"
    vms.add(name)
    return name


# -- a VM back ---------------------------------------------------------------------------


@pytest.mark.slow
def test_restored_vm_has_the_recorded_configuration_and_identical_disks(
    point: Point, settings: Settings, vms: set[str]
) -> None:
    svc, lab = point.services, point.registration.lab
    name = new_name(vms, "restored")
    job = started(svc, point_id=point.point_id, name=name)
    assert job["kind"] == "vm" and job["target"] == name and job["point_id"] == point.point_id
    assert job["status"] in ("pending", "running")
    assert job["vm_path"] == f"{DC}/vm/{name}"
    assert job["power_on"] is False

    done = wait_restore(svc, job["restore_id"])
    assert done["status"] == "completed", done["error_message"]
    assert done["error_message"] is None
    assert [d["status"] for d in done["disks"]] == ["completed"] * len(point.disks)
    assert done["bytes_done"] == done["bytes_total"] > 0
    assert all(d["export_name"] for d in done["disks"])
    assert_same_disks(lab, point, done)

    recorded = recorded_config(settings, point.point_id)
    with lab.connect() as vc:
        vm = find_vm(vc, done["vm_path"])
        got = vm_config(vc, vm)
        info = vm_info(vc, vm)
    assert got.name == name
    assert info.power_state == "poweredOff"
    for field in ("guest_id", "num_cpus", "cores_per_socket", "memory_mb", "firmware"):
        assert getattr(got, field) == getattr(recorded, field), field
    for field in ("folder", "resource_pool", "datastore"):
        assert getattr(got, field) == getattr(recorded, field), field
    assert [(c.kind, c.bus_number) for c in got.controllers] == [
        (c.kind, c.bus_number) for c in recorded.controllers
    ]
    assert [(d.capacity_bytes, d.unit_number, d.thin) for d in got.disks] == [
        (d.capacity_bytes, d.unit_number, d.thin) for d in recorded.disks
    ]
    assert [(n.kind, n.network) for n in got.nics] == [(n.kind, n.network) for n in recorded.nics]
    assert {d["disk_key"] for d in done["disks"]} == {d.key for d in got.disks}

    assert processes_mentioning(str(svc.home), "qemu-nbd", "nbdkit") == []
    assert ports_free(svc.nbd_ports)
    log = svc.home / "logs" / f"restore-{job['restore_id']}.log"
    assert log.exists()
    for text in (log.read_text(), svc.node.log(), svc.hub.log()):
        assert lab.password not in text
    with svc.client() as api:
        assert api.delete(f"/api/v1/restores/{job['restore_id']}").status_code == 409
        listed = api.get("/api/v1/restores", params={"point_id": point.point_id}).json()
    assert [r["restore_id"] for r in listed] == [job["restore_id"]]


@pytest.mark.slow
def test_cli_restore_vm_power_on_wait_follows_to_the_end(point: Point, vms: set[str]) -> None:
    svc, lab = point.services, point.registration.lab
    name = new_name(vms, "powered")
    out = svc.sendense("restore", "vm", point.point_id, "--name", name, "--power-on", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    restore_id = next(w for w in out.stderr.split() if w.startswith("restore-")).rstrip(":")
    assert f"VM {DC}/vm/{name}" in out.stderr
    assert "completed" in out.stdout
    with lab.connect() as vc:
        assert vm_info(vc, find_vm(vc, f"{DC}/vm/{name}")).power_state == "poweredOn"
    with svc.client() as api:
        job = api.get(f"/api/v1/restores/{restore_id}").json()
    assert job["status"] == "completed" and job["power_on"] is True
    assert_same_disks(lab, point, job)


def test_cli_restore_vm_without_wait_prints_the_id_and_the_path(
    point: Point, vms: set[str]
) -> None:
    svc = point.services
    name = new_name(vms, "nowait")
    out = svc.sendense("restore", "vm", point.point_id, "--name", name)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("started restore-pgtest1-")
    assert first.endswith(f": VM {DC}/vm/{name}")
    restore_id = first.split()[1].rstrip(":")
    assert wait_restore(svc, restore_id)["status"] == "completed"


# -- bad input ---------------------------------------------------------------------------


def _cancelled_backup(svc: Services, point: Point) -> str:
    answer = start(svc, point.registration, max_rate_mib=SLOW_MIB_S)
    assert answer.status_code == 200, answer.text
    backup_id = str(answer.json()["backup_id"])
    with svc.client() as api:
        assert api.delete(f"/api/v1/backups/{backup_id}").json()["status"] == "cancelled"
    return backup_id


def test_bad_input_is_one_line_with_its_status_and_exit_code_and_makes_nothing(
    point: Point, settings: Settings, vms: set[str]
) -> None:
    svc, lab = point.services, point.registration.lab
    cancelled = _cancelled_backup(svc, point)
    free = new_name(vms, "never")
    cases: list[tuple[dict[str, Any], list[str], int, int, str]] = [
        # (API body, CLI arguments, HTTP status, exit code, what the line says)
        (
            {"point_id": "backup-nope-1", "name": free},
            ["backup-nope-1", "--name", free],
            404,
            7,
            "restore point backup-nope-1 does not exist",
        ),
        (
            {"point_id": cancelled, "name": free},
            [cancelled, "--name", free],
            404,
            7,
            f"backup {cancelled} is cancelled",
        ),
        (
            {"point_id": point.point_id, "name": "web 01"},
            [point.point_id, "--name", "web 01"],
            409,
            8,
            "web 01",
        ),
        (
            {"point_id": point.point_id, "name": free, "folder": f"{DC}/vm/Nowhere"},
            [point.point_id, "--name", free, "--folder", f"{DC}/vm/Nowhere"],
            404,
            7,
            "Nowhere",
        ),
        (
            {"point_id": point.point_id, "name": free, "datastore": "NoSuchDS"},
            [point.point_id, "--name", free, "--datastore", "NoSuchDS"],
            404,
            7,
            "NoSuchDS",
        ),
        (
            {"point_id": point.point_id, "name": free, "pool": f"{DC}/host/Nope/Resources"},
            [point.point_id, "--name", free, "--pool", f"{DC}/host/Nope/Resources"],
            404,
            7,
            "Nope",
        ),
        (
            {"point_id": point.point_id, "overwrite": "web 01"},
            [point.point_id, "--overwrite", "web 01"],
            422,
            2,
            "--overwrite must name the point's VM again (pgtest1), not 'web 01'",
        ),
        (
            {"point_id": point.point_id},
            [point.point_id],
            422,
            2,
            "give the restored VM a name (--name)",
        ),
    ]
    for body, argv, status, code, words in cases:
        answer = post_restore(svc, **body)
        assert answer.status_code == status, (body, answer.text)
        detail = answer.json()["detail"]
        assert words in detail and "\n" not in detail, (body, detail)
        out = svc.sendense("restore", "vm", *argv)
        assert out.returncode == code, (argv, out.stderr)
        assert out.stderr.strip() == f"error: {detail}", argv

    # A point from before configurations were recorded: its disks, not its VM, come back.
    with session_scope(settings.db_url) as s:
        row = s.get(BackupJob, point.point_id)
        assert row is not None
        row.vm_config = None
    answer = post_restore(svc, point_id=point.point_id, name=free)
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        f"point {point.point_id} has no recorded VM configuration: restore its disks with "
        "`sendense restore disk`"
    )

    with svc.client() as api:
        assert api.get("/api/v1/restores").json() == []
    assert not vm_exists(lab, f"{DC}/vm/{free}")
    assert processes_mentioning(str(svc.home), "qemu-nbd", "nbdkit") == []


# -- faults ------------------------------------------------------------------------------


def _slow_restore(point: Point, vms: set[str], what: str) -> tuple[dict[str, Any], str]:
    """A restore slow enough to act on while it copies; once its bytes are moving."""
    svc = point.services
    name = new_name(vms, what)
    job = started(svc, point_id=point.point_id, name=name, max_rate_mib=SLOW_RESTORE_MIB_S)
    wait_for(
        lambda: wait_restore(svc, job["restore_id"], ("running", *FINISHED))["bytes_done"] > 0,
        timeout=30,
        what="the restore's copy to start",
    )
    return job, name


@pytest.mark.slow
def test_cancel_mid_restore_removes_the_vm_and_its_exports(point: Point, vms: set[str]) -> None:
    svc, lab = point.services, point.registration.lab
    job, name = _slow_restore(point, vms, "cancelled")
    out = svc.sendense("restore", "cancel", job["restore_id"])
    assert out.returncode == 0, out.stderr
    done = wait_restore(svc, job["restore_id"])
    assert done["status"] == "cancelled"
    assert {d["status"] for d in done["disks"]} == {"cancelled"}
    assert_nothing_left(svc, lab, job["restore_id"], name)


@pytest.mark.slow
def test_node_killed_mid_restore_fails_it_and_leaves_nothing(point: Point, vms: set[str]) -> None:
    svc, lab = point.services, point.registration.lab
    job, name = _slow_restore(point, vms, "nodekill")
    svc.node.stop(signal.SIGKILL)  # a crash: its client is orphaned, and dies on its pipe
    svc.start(svc.node)  # a new node, that never heard of the job
    done = wait_restore(svc, job["restore_id"], timeout=60)
    assert done["status"] == "failed"
    assert "no longer knows the job" in done["error_message"]
    assert_nothing_left(svc, lab, job["restore_id"], name)


@pytest.mark.slow
def test_export_killed_mid_restore_fails_it_with_qemu_nbds_words(
    point: Point, vms: set[str]
) -> None:
    svc, lab = point.services, point.registration.lab
    job, name = _slow_restore(point, vms, "exportkill")
    with svc.client() as api:
        victim = api.get(f"/api/v1/restores/{job['restore_id']}").json()["disks"][1]
    (process,) = processes_mentioning(victim["export_name"], "qemu-nbd")
    os.kill(int(process.split(":")[0]), signal.SIGKILL)
    done = wait_restore(svc, job["restore_id"])
    assert done["status"] == "failed"
    assert "qemu-nbd" in done["error_message"]
    assert f"disk {victim['disk_key']}" in done["error_message"]
    assert_nothing_left(svc, lab, job["restore_id"], name)


def test_vcenter_refusing_create_vm_fails_the_job_with_its_reason(
    point: Point, vms: set[str]
) -> None:
    svc, lab = point.services, point.registration.lab
    name = new_name(vms, "refused")
    lab_client.refuse_create_vm(lab.info, "the lab's hosts are full (test)")
    try:
        job = started(svc, point_id=point.point_id, name=name)
        done = wait_restore(svc, job["restore_id"])
    finally:
        lab_client.refuse_create_vm(lab.info, None)
    assert done["status"] == "failed"
    assert "the lab's hosts are full (test)" in done["error_message"]
    assert name in done["error_message"]
    assert all(d["export_name"] is None for d in done["disks"])
    assert_nothing_left(svc, lab, job["restore_id"], name)


@pytest.mark.slow
def test_restarted_hub_fails_an_active_restore_and_cleans_it(point: Point, vms: set[str]) -> None:
    svc, lab = point.services, point.registration.lab
    job, name = _slow_restore(point, vms, "hubkill")
    svc.hub.stop(signal.SIGKILL)  # a crash: nothing is tidied on the way out
    svc.start(svc.hub)
    done = wait_restore(svc, job["restore_id"])
    assert done["status"] == "failed"
    assert done["error_message"].startswith("the hub restarted while the restore ran")
    assert_nothing_left(svc, lab, job["restore_id"], name)


# -- overwrite ---------------------------------------------------------------------------


@pytest.mark.slow
def test_overwrite_replaces_the_original_only_once_its_copy_is_whole(
    point: Point, vms: set[str]
) -> None:
    svc, reg, lab = point.services, point.registration, point.registration.lab
    # The original: a VM of the lab's own (a restored copy of pgtest1), backed up.
    original = new_name(vms, "original")
    first = wait_restore(svc, started(svc, point_id=point.point_id, name=original)["restore_id"])
    assert first["status"] == "completed", first["error_message"]
    path = f"{DC}/vm/{original}"
    with svc.client() as api:
        added = api.post("/api/v1/vms", json={"vcenter_id": reg.credential_id, "path": path})
        assert added.status_code == 200, added.text
    with lab.connect() as vc:
        before = vm_info(vc, find_vm(vc, path)).moref
    own = back_up(svc, reg, vm_name=original)

    wrong = svc.sendense("restore", "vm", own.point_id, "--overwrite", "pgtest1")
    assert wrong.returncode == 2
    assert f"--overwrite must name the point's VM again ({original})" in wrong.stderr

    out = svc.sendense("restore", "vm", own.point_id, "--overwrite", original, "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"it becomes {original} once its disks are written" in out.stderr
    restore_id = next(w for w in out.stderr.split() if w.startswith("restore-")).rstrip(":")
    with svc.client() as api:
        job = api.get(f"/api/v1/restores/{restore_id}").json()
    assert job["status"] == "completed" and job["vm_path"] == path and job["target"] == original
    with lab.connect() as vc:
        after = vm_info(vc, find_vm(vc, path))
        names = {v.name for v in _vms(vc)}
    assert after.moref != before  # a new VM, under the original's name
    assert not any(n.startswith(f"{original}-restoring") for n in names)
    assert [n for n in names if n == original] == [original]
    assert not vm_folder(lab, original).exists()  # the original's files went with it
    assert_same_disks(lab, own, job, folder=False)
    assert processes_mentioning(str(svc.home), "qemu-nbd", "nbdkit") == []


def _vms(vc: Any) -> list[Any]:
    from engine.vcenter import get_inventory

    return list(get_inventory(vc).vms)
