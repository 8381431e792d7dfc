"""Incremental backups through the real hub, node, client and the vcsim lab: an ``auto``
after a full builds on it (overlays with a relative backing file, each point reading
exactly as its source did), the preview says so first, CBT is turned on through the
hub and the CLI, and an unknown backup type is refused listing the types."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.vcenter import find_vm
from engine.vcenter.tasks import wait
from tests.fixtures.backups import MiB
from tests.fixtures.lab import LabRegistration
from tests.fixtures.points import back_up
from tests.fixtures.services import Services

pytestmark = pytest.mark.slow

KiB = 1024


def _backing(qcow2: Path) -> str | None:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(qcow2)],
        capture_output=True,
        text=True,
        check=True,
    )
    backing: str | None = json.loads(info.stdout).get("backing-filename")
    return backing


def _compare(qcow2: Path, raw: Path) -> None:
    done = subprocess.run(
        ["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(qcow2), str(raw)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _saved(reg: LabRegistration, tmp: Path, name: str) -> dict[int, Path]:
    """The source disks as they are now (the lab changes them under later points)."""
    out = {}
    for key, flat in reg.pgtest1.flat.items():
        out[key] = tmp / f"{name}-{key}.raw"
        subprocess.run(["cp", "--sparse=always", str(flat), str(out[key])], check=True)
    return out


def _preview(services: Services, reg: LabRegistration, **extra: Any) -> dict[str, Any]:
    with services.client() as api:
        r = api.post(
            "/api/v1/backups/preview",
            json={"vm_name": "pgtest1", "repository_id": reg.repository_id, **extra},
        )
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_an_auto_after_a_full_is_an_incremental_that_reads_as_its_source(
    services: Services, lab_registered: LabRegistration, tmp_path: Path
) -> None:
    reg, lab = lab_registered, lab_registered.lab
    first = _preview(services, reg, backup_type="auto")
    assert first["backup_type"] == "full" and first["cbt_enabled"] is True
    assert first["reason"] == "no restore point of this VM yet: full copy"

    full = back_up(services, reg, backup_type="full")
    full_source = _saved(reg, tmp_path, "full")
    lab.write("pgtest1", 2000, 1 * MiB, 64 * KiB)  # data
    lab.write("pgtest1", 2000, 2 * MiB - 4 * KiB, 8 * KiB)  # across a chunk boundary
    lab.write("pgtest1", 2000, 0, 64 * KiB, zero=True)  # zeroes over data
    capacity = reg.pgtest1.disks[1].capacity_bytes
    lab.write("pgtest1", 2001, capacity - 1, 1)  # the disk's last byte

    preview = _preview(services, reg)  # the API's default is still full
    assert preview["backup_type"] == "full" and preview["requested_type"] == "full"
    preview = _preview(services, reg, backup_type="auto")
    assert preview["backup_type"] == "incremental"
    assert preview["parent_backup_id"] == full.point_id
    assert {d["disk_key"]: d["parent_qcow2_path"] for d in preview["disks"]} == {
        k: str(p) for k, p in full.disks.items()
    }

    incr = back_up(services, reg, backup_type="auto")
    with services.client() as api:
        job = api.get(f"/api/v1/backups/{incr.point_id}").json()
        point = api.get(f"/api/v1/restore-points/{incr.point_id}").json()
    assert job["backup_type"] == "incremental" and job["requested_type"] == "auto"
    assert job["parent_backup_id"] == full.point_id
    for disk in job["disks"]:
        assert disk["mode"] == "incremental" and disk["fallback_reason"] is None
        assert disk["capacity_bytes"] > disk["bytes_total"]  # only the changed areas
        assert disk["parent_qcow2_path"] == str(full.disks[disk["disk_key"]])
    assert point["backup_type"] == "incremental"
    assert point["chain"] == [full.point_id, incr.point_id]
    for key, qcow2 in incr.disks.items():
        backing = _backing(qcow2)
        assert backing is not None and not backing.startswith("/")
        assert (qcow2.parent / backing).resolve() == full.disks[key].resolve()
        _compare(qcow2, reg.pgtest1.flat[key])
        _compare(full.disks[key], full_source[key])  # the parent is untouched


def test_a_disk_whose_tracking_was_reset_is_copied_whole_and_stands_alone(
    services: Services, lab_registered: LabRegistration
) -> None:
    reg, lab = lab_registered, lab_registered.lab
    full = back_up(services, reg, backup_type="full")
    lab.reset_tracking("pgtest1", 2001)
    lab.write("pgtest1", 2000, 3 * MiB, 64 * KiB)
    incr = back_up(services, reg, backup_type="incremental")
    with services.client() as api:
        job = api.get(f"/api/v1/backups/{incr.point_id}").json()
    disks = {d["disk_key"]: d for d in job["disks"]}
    assert job["backup_type"] == "incremental" and job["parent_backup_id"] == full.point_id
    assert disks[2000]["mode"] == "incremental"
    assert disks[2001]["mode"] == "full" and disks[2001]["parent_qcow2_path"] is None
    assert "2001" in disks[2001]["fallback_reason"]
    assert _backing(incr.disks[2001]) is None
    for key, qcow2 in incr.disks.items():
        _compare(qcow2, reg.pgtest1.flat[key])


def test_enable_cbt_through_the_hub_and_the_cli(
    services: Services, lab_registered: LabRegistration
) -> None:
    reg = lab_registered
    with services.client() as api:
        web = api.post(
            "/api/v1/vms", json={"vcenter_id": reg.credential_id, "path": reg.web01.path}
        )
        assert web.status_code == 200, web.text
        assert web.json()["cbt_enabled"] is False
        try:
            on = api.post(f"/api/v1/vms/{web.json()['context_id']}/cbt")
            assert on.status_code == 200, on.text
            assert on.json()["cbt_enabled"] is True
        finally:  # the lab is shared: leave web 01 as it was (CBT off)
            with reg.lab.connect() as vc:
                vm = find_vm(vc, reg.web01.path)
                wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=False)))
        missing = api.post("/api/v1/vms/ctx-nope/cbt")
        assert missing.status_code == 404
        assert missing.json()["detail"] == "VM context 'ctx-nope' does not exist"

    done = services.sendense("vm", "enable-cbt", reg.pgtest1.path)
    assert done.returncode == 0, done.stderr
    assert f"CBT is on for {reg.pgtest1.path}" in done.stdout
    unknown = services.sendense("vm", "enable-cbt", "/DatabanxDC/vm/fstest1")
    assert unknown.returncode == 7
    assert "add it first: sendense vm add" in unknown.stderr


def test_an_unknown_backup_type_is_refused_listing_the_types(
    services: Services, lab_registered: LabRegistration
) -> None:
    with services.client() as api:
        r = api.post(
            "/api/v1/backups",
            json={"vm_name": "pgtest1", "repository_id": 1, "backup_type": "weekly"},
        )
    assert r.status_code == 422
    assert "'full', 'incremental' or 'auto'" in r.text
    cli = services.sendense("backup", "start", "pgtest1", "--repo", "1", "--type", "weekly")
    assert cli.returncode == 2
    assert "full" in cli.stderr and "incremental" in cli.stderr and "auto" in cli.stderr
    shown = services.sendense("backup", "preview", "pgtest1", "--repo", "1")
    assert shown.returncode == 0, shown.stderr
    assert "will be: full" in shown.stdout
