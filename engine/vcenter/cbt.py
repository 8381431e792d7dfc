"""Changed block tracking: turning it on, and reading what changed between two snapshots."""

from __future__ import annotations

import logging
import time
from typing import Any

from pyVmomi import vim, vmodl

from engine.errors import SnapshotError, VCenterError
from engine.vcenter.connection import VCenter
from engine.vcenter.inventory import disks_from_devices
from engine.vcenter.properties import read
from engine.vcenter.snapshots import PREFIX, remove_snapshot, snapshot_disks, take
from engine.vcenter.tasks import fault_message, wait


class FullBackupNeeded(Exception):
    """Not an error: the disk's change tracking restarted, so only a full copy is correct."""


log = logging.getLogger(__name__)


def enable_cbt(vc: VCenter, vm: Any) -> None:
    """Turn CBT on; it takes effect at the next stun, so take and remove a snapshot.

    Refused while the VM has snapshots: ESX only starts tracking on a disk chain without
    them, and an enable that silently does nothing would make every backup a full one.
    """
    props = read(
        vc, vm, ["name", "rootSnapshot", "config.changeTrackingEnabled", "config.hardware.device"]
    )
    name = props.get("name", vm._moId)
    if props.get("rootSnapshot"):
        raise SnapshotError(
            f"cannot enable CBT on {name}: it has snapshots; remove them first "
            "(sendense leaves none behind, so they were taken by something else)"
        )
    enabled = bool(props.get("config.changeTrackingEnabled"))
    disks = disks_from_devices(props.get("config.hardware.device"))
    if enabled and all(d.change_id for d in disks):
        return
    try:
        if not enabled:
            wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))
        # Also when it was enabled by someone else but no stun has happened since.
        ref = take(vm, f"{PREFIX}cbt-enable-{int(time.time())}", quiesce=False)
    except vmodl.MethodFault as exc:
        raise VCenterError(f"enabling CBT on {name} failed: {fault_message(exc)}") from None
    remove_snapshot(vc, ref)
    log.info("CBT enabled on %s", name)


# Faults that say nothing about the change id: the session, the rights or the objects are
# wrong, and a full copy would fail the same way.
NOT_ABOUT_TRACKING = (
    vim.fault.NotAuthenticated,
    vim.fault.NoPermission,
    vim.fault.InvalidLogin,
    vmodl.fault.ManagedObjectNotFound,
    vmodl.fault.SecurityError,
)


def _query_fault(exc: vmodl.MethodFault, disk_key: int, change_id: str) -> Exception:
    """What a QueryChangedDiskAreas fault means. ESX answers a change id it does not know
    (tracking reset on the host, a ctk file lost, an id of another disk) with a bare
    FileFault, "Error caused by file", and other faults for other reasons it cannot tell
    the changes: all of those mean that only a full copy of the disk is correct."""
    reason = " ".join(fault_message(exc).split())
    if change_id == "*" or isinstance(exc, NOT_ABOUT_TRACKING):
        return VCenterError(f"QueryChangedDiskAreas on disk {disk_key} failed: {reason}")
    return FullBackupNeeded(f"disk {disk_key}: vCenter refused change id {change_id} ({reason})")


def _uuid(change_id: str) -> str:
    return change_id.rsplit("/", 1)[0]


def query_changed_areas(
    vc: VCenter,
    vm: Any,
    snapshot_ref: Any,
    disk_key: int,
    capacity_bytes: int,
    change_id: str,
) -> list[tuple[int, int]]:
    """(offset, length) areas of the disk changed since ``change_id`` up to the snapshot;
    ``"*"`` gives the allocated areas (what a full backup must copy).

    vCenter answers a part of the disk per call: each call starts where the previous
    answer's covered range (startOffset + length) ends, until the whole disk is covered.
    Raises FullBackupNeeded when the disk's change tracking was reset since ``change_id``
    or vCenter does not know it (a FileFault); VCenterError for faults about the session
    or the objects, which a full copy would meet too.
    """
    if change_id != "*":
        at_snapshot = next(
            (d.change_id for d in snapshot_disks(vc, snapshot_ref) if d.key == disk_key), None
        )
        if not at_snapshot:
            raise FullBackupNeeded(f"disk {disk_key} had no change id when the snapshot was taken")
        if _uuid(at_snapshot) != _uuid(change_id):
            raise FullBackupNeeded(
                f"disk {disk_key}: change tracking was reset ({change_id} -> {at_snapshot})"
            )
    areas: list[tuple[int, int]] = []
    offset = 0
    while offset < capacity_bytes:
        try:
            info = vm.QueryChangedDiskAreas(
                snapshot=snapshot_ref, deviceKey=disk_key, startOffset=offset, changeId=change_id
            )
        except vmodl.MethodFault as exc:
            raise _query_fault(exc, disk_key, change_id) from None
        areas.extend((int(a.start), int(a.length)) for a in info.changedArea or ())
        covered_to = int(info.startOffset) + int(info.length)
        if covered_to <= offset:
            raise VCenterError(
                f"QueryChangedDiskAreas on disk {disk_key} made no progress at {offset}"
            )
        offset = covered_to
    return areas
