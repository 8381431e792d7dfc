"""Changed block tracking against the lab: QueryChangedDiskAreas after real writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyVmomi import vim

from engine.vcenter import (
    FullBackupNeeded,
    SnapshotError,
    create_snapshot,
    enable_cbt,
    find_vm,
    query_changed_areas,
    remove_snapshot,
    snapshot_disks,
    vm_info,
)
from engine.vcenter.tasks import wait
from tests.fixtures.lab import Lab

KiB = 1024


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
            assert info.disks[0].change_id and info.disks[0].change_id.endswith("/0")
        finally:  # the lab is shared: leave web 01 as it was (CBT off)
            wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=False)))
        off = vm_info(vc, vm)
    assert not off.cbt_enabled and off.disks[0].change_id is None
