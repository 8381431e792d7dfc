"""Changed block tracking against the lab: QueryChangedDiskAreas after real writes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from engine.errors import VCenterError
from engine.lab import client as lab_client
from engine.lab.launcher import LabError, LabInfo, start, stop
from engine.vcenter import (
    FullBackupNeeded,
    SnapshotError,
    VCenter,
    connect,
    create_snapshot,
    enable_cbt,
    find_vm,
    query_changed_areas,
    remove_snapshot,
    snapshot_disks,
    vm_info,
)
from engine.vcenter.tasks import wait
from engine.vcenter.vms import datastore_file_path
from tests.conftest import free_port
from tests.fixtures.lab import BUILD_CACHE, LAB_DISK_MIB, Lab

KiB = 1024
MiB = 1024 * KiB
PG = "/DatabanxDC/vm/pgtest1"


@pytest.fixture
def own_lab(tmp_path: Path) -> Iterator[LabInfo]:
    """A lab of this test's own, for changes the shared one must not see (a grown or added
    disk, a restart); it starts in well under a second."""
    info = start(tmp_path, port=free_port(), disk_mib=LAB_DISK_MIB, vms=1, bin_dir=BUILD_CACHE)
    try:
        yield info
    finally:
        stop(tmp_path)


def own_connect(info: LabInfo) -> VCenter:
    return connect(info.host, info.user, info.password, thumbprint=info.thumbprint)


def change_ids(vc: VCenter, snapshot: object) -> dict[int, str | None]:
    return {d.key: d.change_id for d in snapshot_disks(vc, snapshot)}


def allocated(path: Path) -> list[tuple[int, int]]:
    """The file's data extents, straight from the filesystem."""
    out = []
    with open(path, "rb") as f:
        fd, end, off = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while off < end:
            try:
                data = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            out.append((data, hole - data))
            off = hole
    return out


def test_changed_areas_cover_exactly_what_was_written(lab: Lab) -> None:
    # Ten separate ranges: more than the lab answers per call, so the loop is exercised.
    writes = [(i * 512 * KiB + 4 * KiB * i, 4 * KiB + i) for i in range(10)]
    with lab.connect() as vc:
        vm = find_vm(vc, lab.pgtest1.path)
        base = create_snapshot(vc, vm, "t-cbt-base", allow_crash_consistent=False)
        before = {d.key: d for d in snapshot_disks(vc, base.ref)}
        remove_snapshot(vc, base.ref)
        for offset, length in writes:
            lab.write("pgtest1", 2000, offset, length)
        after = create_snapshot(vc, vm, "t-cbt-after", allow_crash_consistent=False)
        try:
            now = {d.key: d for d in snapshot_disks(vc, after.ref)}
            assert now[2000].change_id != before[2000].change_id
            areas = query_changed_areas(
                vc, vm, after.ref, 2000, now[2000].capacity_bytes, before[2000].change_id
            )
            assert areas == writes
            untouched = query_changed_areas(
                vc, vm, after.ref, 2001, now[2001].capacity_bytes, before[2001].change_id
            )
            assert untouched == []
        finally:
            remove_snapshot(vc, after.ref)


def test_star_returns_the_allocated_areas(lab: Lab) -> None:
    with lab.connect() as vc:
        vm = find_vm(vc, lab.pgtest1.path)
        snap = create_snapshot(vc, vm, "t-star", allow_crash_consistent=False)
        try:
            disk = next(d for d in snapshot_disks(vc, snap.ref) if d.key == 2001)
            areas = query_changed_areas(vc, vm, snap.ref, 2001, disk.capacity_bytes, "*")
        finally:
            remove_snapshot(vc, snap.ref)
    assert areas == allocated(lab.pgtest1.flat[2001])
    assert 0 < sum(n for _, n in areas) < disk.capacity_bytes


def test_reset_gives_new_uuid_and_full_backup_needed(lab: Lab) -> None:
    with lab.connect() as vc:
        vm = find_vm(vc, lab.pgtest1.path)
        old = next(d for d in vm_info(vc, vm).disks if d.key == 2001).change_id
        assert old
        new = lab.reset_tracking("pgtest1", 2001)
        assert new.rsplit("/", 1)[0] != old.rsplit("/", 1)[0]
        assert new.endswith("/0")
        snap = create_snapshot(vc, vm, "t-reset", allow_crash_consistent=False)
        try:
            disk = next(d for d in snapshot_disks(vc, snap.ref) if d.key == 2001)
            assert disk.change_id == new
            with pytest.raises(FullBackupNeeded):
                query_changed_areas(vc, vm, snap.ref, 2001, disk.capacity_bytes, old)
        finally:
            remove_snapshot(vc, snap.ref)


def test_enable_cbt_refused_with_snapshots_then_takes_effect(lab: Lab) -> None:
    with lab.connect() as vc:
        vm = find_vm(vc, lab.web01.path)
        snap = create_snapshot(vc, vm, "t-enable", allow_crash_consistent=True)
        try:
            with pytest.raises(SnapshotError, match="has snapshots"):
                enable_cbt(vc, vm)
        finally:
            remove_snapshot(vc, snap.ref)
        try:
            enable_cbt(vc, vm)
            info = vm_info(vc, vm)
            assert info.cbt_enabled and not info.has_snapshots
            enabled_id = info.disks[0].change_id
            assert enabled_id and enabled_id.endswith("/0")
            lab.write("web 01", 2000, 3 * MiB, 64 * KiB)
            snap = create_snapshot(vc, vm, "t-enabled", allow_crash_consistent=True)
            try:
                disk = snapshot_disks(vc, snap.ref)[0]
                assert disk.change_id and disk.change_id.endswith("/1")
                areas = query_changed_areas(vc, vm, snap.ref, 2000, disk.capacity_bytes, enabled_id)
                assert areas == [(3 * MiB, 64 * KiB)]
            finally:
                remove_snapshot(vc, snap.ref)
        finally:  # the lab is shared: leave web 01 as it was (CBT off)
            wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=False)))
        off = vm_info(vc, vm)
    assert not off.cbt_enabled and off.disks[0].change_id is None


def test_zero_writes_edges_and_many_scattered_areas(lab: Lab) -> None:
    """Zeroes over data, a write across a 64 KiB chunk boundary, the disk's last byte and
    twenty scattered 64 KiB writes: all read back as written and come back through the
    lab's windows of 8 areas."""
    flat = lab.pgtest1.flat[2001]
    capacity = flat.stat().st_size
    zeroed = (100 * KiB, 200 * KiB)  # inside granule 0, which holds data
    across = (64 * KiB * 10 - 100, 200)
    last = (capacity - 1, 1)
    scattered = [(1 * MiB + i * 512 * KiB, 64 * KiB) for i in range(20)]
    with lab.connect() as vc:
        vm = find_vm(vc, PG)
        base = create_snapshot(vc, vm, "t-zero-base", allow_crash_consistent=False)
        start_id = change_ids(vc, base.ref)[2001]
        remove_snapshot(vc, base.ref)
        assert start_id
        assert flat.read_bytes()[zeroed[0] : sum(zeroed)].count(0) < zeroed[1]
        lab.write("pgtest1", 2001, *zeroed, zero=True)
        for i, (offset, length) in enumerate(scattered):
            lab.write("pgtest1", 2001, offset, length, zero=i % 3 == 0)
        before = flat.read_bytes()
        lab.write("pgtest1", 2001, *across)
        lab.write("pgtest1", 2001, *last)
        after = flat.read_bytes()
        snap = create_snapshot(vc, vm, "t-zero", allow_crash_consistent=False)
        try:
            areas = query_changed_areas(vc, vm, snap.ref, 2001, capacity, start_id)
        finally:
            remove_snapshot(vc, snap.ref)
    assert after[zeroed[0] : sum(zeroed)] == bytes(zeroed[1])
    for offset, length in scattered[::3]:
        assert after[offset : offset + length] == bytes(length)
    assert after[: across[0]] == before[: across[0]]
    assert after[sum(across) : last[0]] == before[sum(across) : last[0]]
    assert after[across[0] : sum(across)] != before[across[0] : sum(across)]
    assert len(after) == capacity
    assert areas == sorted([zeroed, *scattered, across, last])


def test_unknown_change_id_is_a_file_fault_and_a_full_backup(lab: Lab) -> None:
    with lab.connect() as vc:
        vm = find_vm(vc, PG)
        snap = create_snapshot(vc, vm, "t-unknown", allow_crash_consistent=False)
        try:
            now = change_ids(vc, snap.ref)[2000]
            assert now
            future = f"{now.rsplit('/', 1)[0]}/{int(now.rsplit('/', 1)[1]) + 5}"
            for bad in (future, "52 3f 9a garbage", f"{now}x"):
                with pytest.raises(vim.fault.FileFault, match="Error caused by file"):
                    vm.QueryChangedDiskAreas(
                        snapshot=snap.ref, deviceKey=2000, startOffset=0, changeId=bad
                    )
            with pytest.raises(FullBackupNeeded, match="FileFault") as caught:
                query_changed_areas(vc, vm, snap.ref, 2000, 8 * MiB, future)
            assert "\n" not in str(caught.value)
        finally:
            remove_snapshot(vc, snap.ref)
        # A vCenter error that is not about the change id stays one.
        with pytest.raises(VCenterError, match="ManagedObjectNotFound"):
            query_changed_areas(vc, vm, snap.ref, 2000, 8 * MiB, "*")


def test_grow_keeps_tracking_and_shows_everywhere(own_lab: LabInfo) -> None:
    with own_connect(own_lab) as vc:
        vm = find_vm(vc, PG)
        disk = next(d for d in vm_info(vc, vm).disks if d.key == 2000)
        descriptor = datastore_file_path(vc, disk.file_name)
        old = create_snapshot(vc, vm, "t-before-grow", allow_crash_consistent=False)
        with pytest.raises(LabError, match="has snapshots"):
            lab_client.resize_disk(own_lab, "pgtest1", 2000, 12)
        remove_snapshot(vc, old.ref)
        with pytest.raises(LabError, match="can only grow"):
            lab_client.resize_disk(own_lab, "pgtest1", 2000, LAB_DISK_MIB)
        assert lab_client.resize_disk(own_lab, "pgtest1", 2000, 12) == 12 * MiB
        grown = next(d for d in vm_info(vc, vm).disks if d.key == 2000)
        assert grown.capacity_bytes == 12 * MiB
        assert grown.change_id == disk.change_id  # ESX keeps tracking across a grow
        assert descriptor.with_name(descriptor.stem + "-flat.vmdk").stat().st_size == 12 * MiB
        assert f"RW {12 * MiB // 512} VMFS" in descriptor.read_text()
        lab_client.write(own_lab, "pgtest1", 2000, 12 * MiB - 4 * KiB, 4 * KiB)
        snap = create_snapshot(vc, vm, "t-grown", allow_crash_consistent=False)
        try:
            at = next(d for d in snapshot_disks(vc, snap.ref) if d.key == 2000)
            assert at.capacity_bytes == 12 * MiB
            assert disk.change_id
            areas = query_changed_areas(vc, vm, snap.ref, 2000, 12 * MiB, disk.change_id)
            assert areas == [(12 * MiB - 4 * KiB, 4 * KiB)]
        finally:
            remove_snapshot(vc, snap.ref)


def test_added_disk_shows_in_config_and_later_snapshots_only(own_lab: LabInfo) -> None:
    with own_connect(own_lab) as vc:
        vm = find_vm(vc, PG)
        before = create_snapshot(vc, vm, "t-before-add", allow_crash_consistent=False)
        added = lab_client.add_disk(own_lab, "pgtest1", 4)
        assert added.key == 2002 and added.capacity_bytes == 4 * MiB
        assert added.file_name == "[DatabanxDS] pgtest1/pgtest1_2.vmdk"
        assert added.change_id and added.change_id.endswith("/0")
        try:
            assert sorted(change_ids(vc, before.ref)) == [2000, 2001]
        finally:
            remove_snapshot(vc, before.ref)
        info = next(d for d in vm_info(vc, vm).disks if d.key == 2002)
        assert (info.capacity_bytes, info.change_id) == (4 * MiB, added.change_id)
        assert info.controller_key == 1000 and info.unit_number == 2
        flat = datastore_file_path(vc, added.file_name).with_name("pgtest1_2-flat.vmdk")
        assert flat.stat().st_size == 4 * MiB
        lab_client.write(own_lab, "pgtest1", 2002, 0, 4 * KiB)
        snap = create_snapshot(vc, vm, "t-added", allow_crash_consistent=False)
        try:
            disk = next(d for d in snapshot_disks(vc, snap.ref) if d.key == 2002)
            assert disk.change_id == added.change_id.replace("/0", "/1")
            star = query_changed_areas(vc, vm, snap.ref, 2002, 4 * MiB, "*")
            since = query_changed_areas(vc, vm, snap.ref, 2002, 4 * MiB, added.change_id)
        finally:
            remove_snapshot(vc, snap.ref)
    assert star == allocated(flat) and star
    assert since == [(0, 4 * KiB)]


def test_change_id_from_before_a_restart_is_refused(own_lab: LabInfo, tmp_path: Path) -> None:
    """The lab rebuilds its disks at every start: an id of the last start must not let an
    incremental build on data that is not there."""
    with own_connect(own_lab) as vc:
        old = next(d for d in vm_info(vc, find_vm(vc, PG)).disks if d.key == 2000).change_id
    assert old
    stop(tmp_path)
    info = start(tmp_path, port=own_lab.port, disk_mib=LAB_DISK_MIB, vms=1, bin_dir=BUILD_CACHE)
    with own_connect(info) as vc:
        vm = find_vm(vc, PG)
        snap = create_snapshot(vc, vm, "t-restarted", allow_crash_consistent=False)
        try:
            now = change_ids(vc, snap.ref)[2000]
            assert now and now.rsplit("/", 1)[0] != old.rsplit("/", 1)[0]
            with pytest.raises(vim.fault.FileFault):
                vm.QueryChangedDiskAreas(
                    snapshot=snap.ref, deviceKey=2000, startOffset=0, changeId=old
                )
            with pytest.raises(FullBackupNeeded, match="reset"):
                query_changed_areas(vc, vm, snap.ref, 2000, 8 * MiB, old)
        finally:
            remove_snapshot(vc, snap.ref)


def test_enable_cbt_completes_an_enable_that_never_took_effect(own_lab: LabInfo) -> None:
    """Enabled in the config by someone else, but no stun since: no change ids yet."""
    with own_connect(own_lab) as vc:
        vm = find_vm(vc, "/DatabanxDC/vm/Prod/Web Tier/web 01")
        wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))
        half = vm_info(vc, vm)
        assert half.cbt_enabled and half.disks[0].change_id is None
        enable_cbt(vc, vm)
        done = vm_info(vc, vm)
    assert done.disks[0].change_id and not done.has_snapshots
