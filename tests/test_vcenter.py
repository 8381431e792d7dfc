"""engine.vcenter against the real vcsim lab: connection, inventory, finding VMs, snapshots."""

from __future__ import annotations

import json
import subprocess

import pytest

from engine.vcenter import (
    LoginError,
    SnapshotError,
    ThumbprintMismatch,
    VCenterError,
    VMNotFound,
    connect,
    create_snapshot,
    find_vm,
    get_inventory,
    list_snapshots,
    remove_leftover_snapshots,
    remove_snapshot,
    vm_info,
)
from tests.fixtures.lab import LAB_DISK_MIB, Lab

MiB = 1024 * 1024


def test_wrong_password_is_one_clear_line(lab: Lab) -> None:
    with pytest.raises(LoginError) as err:
        connect(lab.host, lab.user, "not-the-password", thumbprint=lab.thumbprint)
    msg = str(err.value)
    assert msg == f"vCenter {lab.host} refused the login for {lab.user}"
    assert "not-the-password" not in msg and "\n" not in msg
    assert err.value.exit_code == 3


def test_wrong_thumbprint_is_refused_with_both(lab: Lab) -> None:
    pinned = "ab" * 32
    with pytest.raises(ThumbprintMismatch) as err:
        connect(lab.host, lab.user, lab.password, thumbprint=pinned)
    assert pinned in str(err.value) and lab.thumbprint in str(err.value)
    assert "\n" not in str(err.value)


def test_no_thumbprint_needs_explicit_insecure(lab: Lab) -> None:
    with pytest.raises(VCenterError, match="no certificate thumbprint pinned"):
        connect(lab.host, lab.user, lab.password, thumbprint=None)
    with connect(lab.host, lab.user, lab.password, thumbprint=None, insecure=True) as vc:
        assert vc.content.about.apiType == "VirtualCenter"


def test_inventory_shape_paths_and_disks(lab: Lab) -> None:
    with lab.connect() as vc:
        inv = get_inventory(vc)
    inv.model_dump_json()  # JSON-able as it stands
    dcs = {d.name for d in inv.datacenters}
    assert {"DatabanxDC", "DC0"} <= dcs
    kinds = {e.kind for e in inv.entities}
    assert {"Folder", "ClusterComputeResource", "HostSystem", "ResourcePool"} <= kinds
    vms = {v.path: v for v in inv.vms}
    pg = vms["/DatabanxDC/vm/pgtest1"]
    assert pg.name == "pgtest1" and pg.datacenter == "DatabanxDC"
    assert pg.moref.startswith("vm-") and pg.power_state == "poweredOn"
    assert (pg.cpus, pg.memory_mb, pg.cbt_enabled) == (2, 4096, True)
    assert [(d.key, d.capacity_bytes) for d in pg.disks] == [
        (2000, LAB_DISK_MIB * MiB),
        (2001, LAB_DISK_MIB * 5 // 3 * MiB),
    ]
    assert pg.disks[0].file_name == "[DatabanxDS] pgtest1/pgtest1.vmdk"
    assert {d.datastore for d in pg.disks} == {"DatabanxDS"}
    assert [(d.controller_key, d.unit_number) for d in pg.disks] == [(1000, 0), (1000, 1)]
    assert all(d.change_id and "/" in d.change_id for d in pg.disks)
    web = vms["/DatabanxDC/vm/Prod/Web Tier/web 01"]
    assert web.name == "web 01" and len(web.disks) == 1
    assert any(p.startswith("/DC0/vm/") for p in vms)
    folders = {e.path for e in inv.of_kind("Folder")}
    assert "/DatabanxDC/vm/Prod/Web Tier" in folders


@pytest.mark.parametrize(
    "wanted",
    ["/DatabanxDC/vm/pgtest1", "DatabanxDC/vm/pgtest1", "  /DatabanxDC/vm/pgtest1  "],
)
def test_find_vm_by_path(lab: Lab, wanted: str) -> None:
    with lab.connect() as vc:
        assert find_vm(vc, wanted)._moId == lab.pgtest1.moref


def test_find_vm_by_moref_and_nested_name_with_spaces(lab: Lab) -> None:
    with lab.connect() as vc:
        assert find_vm(vc, lab.pgtest1.moref)._moId == lab.pgtest1.moref
        web = find_vm(vc, "DatabanxDC/vm/Prod/Web Tier/web 01")
        info = vm_info(vc, web)
    assert (info.name, info.path) == ("web 01", "/DatabanxDC/vm/Prod/Web Tier/web 01")


@pytest.mark.parametrize("wanted", ["/DatabanxDC/vm/nope", "vm-999999", "/DatabanxDC/vm/Prod"])
def test_find_vm_missing(lab: Lab, wanted: str) -> None:
    with lab.connect() as vc, pytest.raises(VMNotFound) as err:
        find_vm(vc, wanted)
    assert "\n" not in str(err.value)


def test_flat_files_are_real_vmdks(lab: Lab) -> None:
    for key, disk in zip((2000, 2001), lab.pgtest1.disks, strict=True):
        flat = lab.pgtest1.flat[key]
        assert flat.stat().st_size == disk.capacity_bytes
        assert flat.stat().st_blocks * 512 < disk.capacity_bytes  # holes are holes
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", str(lab.pgtest1.descriptor[key])],
            check=True,
            capture_output=True,
            text=True,
        )
        assert json.loads(out.stdout)["virtual-size"] == disk.capacity_bytes


def test_snapshot_create_and_remove_leaves_none(lab: Lab) -> None:
    with lab.connect() as vc:
        vm = find_vm(vc, lab.pgtest1.path)
        snap = create_snapshot(vc, vm, "t-create", allow_crash_consistent=False)
        assert (snap.name, snap.quiesced) == ("sendense-t-create", True)
        assert [n.name for n in list_snapshots(vc, vm)] == ["sendense-t-create"]
        assert vm_info(vc, vm).has_snapshots
        remove_snapshot(vc, snap.ref)
        assert list_snapshots(vc, vm) == []
        assert not vm_info(vc, vm).has_snapshots


def test_leftover_snapshots_removed_except_running_jobs(lab: Lab) -> None:
    with lab.connect() as vc:
        vm = find_vm(vc, lab.pgtest1.path)
        for job in ("old-1", "running", "old-2"):
            create_snapshot(vc, vm, job, allow_crash_consistent=False)
        vm.CreateSnapshot_Task(name="operator-snap", memory=False, quiesce=False)
        try:
            removed = remove_leftover_snapshots(vc, vm, {"running"})
            assert sorted(removed) == ["sendense-old-1", "sendense-old-2"]
            left = sorted(n.name for n in list_snapshots(vc, vm))
            assert left == ["operator-snap", "sendense-running"]
        finally:
            for node in list_snapshots(vc, vm):
                remove_snapshot(vc, node.snapshot)
        assert list_snapshots(vc, vm) == []


def test_quiesce_fault_falls_back_only_when_allowed(lab: Lab) -> None:
    lab.quiesce_fault("web 01")
    try:
        with lab.connect() as vc:
            vm = find_vm(vc, lab.web01.path)
            with pytest.raises(SnapshotError, match="crash-consistent snapshot is not allowed"):
                create_snapshot(vc, vm, "t-quiesce", allow_crash_consistent=False)
            assert list_snapshots(vc, vm) == []
            snap = create_snapshot(vc, vm, "t-quiesce", allow_crash_consistent=True)
            try:
                assert (snap.quiesced, snap.kind) == (False, "crash-consistent")
            finally:
                remove_snapshot(vc, snap.ref)
            assert list_snapshots(vc, vm) == []
    finally:
        lab.quiesce_fault("web 01", enabled=False)
