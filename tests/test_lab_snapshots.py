"""The lab's snapshot files: removing snapshots (one by one, or all) never takes a disk
file with it, and leaves no snapshot file behind (vcsim alone deleted a disk descriptor
once its file keys had been renumbered)."""

from __future__ import annotations

from engine.vcenter import create_snapshot, find_vm, list_snapshots, remove_snapshot
from engine.vcenter.tasks import wait
from tests.fixtures.lab import Lab


def files(lab: Lab) -> set[str]:
    return {p.name for p in lab.pgtest1.descriptor[2000].parent.iterdir()}


def test_removing_snapshots_keeps_every_disk_file(lab: Lab) -> None:
    disk_files = {p.name for p in (*lab.pgtest1.descriptor.values(), *lab.pgtest1.flat.values())}
    before = files(lab)
    assert disk_files <= before
    with lab.connect() as vc:
        vm = find_vm(vc, lab.pgtest1.path)
        for job in ("files-1", "files-2", "files-3"):
            create_snapshot(vc, vm, job, allow_crash_consistent=True)
        assert len(files(lab) - before) == 3  # one .vmsn each
        middle = list_snapshots(vc, vm)[1]
        remove_snapshot(vc, middle.snapshot)
        assert disk_files <= files(lab) and len(files(lab) - before) == 2
        for node in list_snapshots(vc, vm):
            remove_snapshot(vc, node.snapshot)
        assert files(lab) == before
        for job in ("files-4", "files-5"):
            create_snapshot(vc, vm, job, allow_crash_consistent=True)
        wait(vm.RemoveAllSnapshots_Task())
        assert files(lab) == before and list_snapshots(vc, vm) == []
