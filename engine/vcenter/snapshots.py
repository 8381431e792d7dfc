"""Backup snapshots: quiesced where the guest allows, always named ``sendense-<job id>`` so
that a leftover one (a killed job, a lost node) can be recognised and removed later."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from engine.contract.inventory import DiskInfo
from engine.contract.status import SnapshotKind
from engine.errors import SnapshotError
from engine.vcenter.connection import VCenter
from engine.vcenter.inventory import disks_from_devices
from engine.vcenter.properties import read
from engine.vcenter.tasks import fault_message, wait

log = logging.getLogger(__name__)

PREFIX = "sendense-"

# Faults that mean "the guest could not be quiesced", as opposed to "no snapshot possible".
QUIESCE_FAULTS: tuple[type[Exception], ...] = (
    vim.fault.ApplicationQuiesceFault,
    vim.fault.QuiesceDatastoreIOForHAFailed,
    vim.fault.ToolsUnavailable,
)


@dataclass
class SnapshotResult:
    ref: Any  # vim.vm.Snapshot
    name: str
    moref: str
    quiesced: bool

    @property
    def kind(self) -> SnapshotKind:
        return SnapshotKind.QUIESCED if self.quiesced else SnapshotKind.CRASH_CONSISTENT


def take(vm: Any, name: str, *, quiesce: bool, description: str = "") -> Any:
    return wait(
        vm.CreateSnapshot_Task(name=name, description=description, memory=False, quiesce=quiesce)
    )


def create_snapshot(
    vc: VCenter, vm: Any, job_id: str, *, allow_crash_consistent: bool
) -> SnapshotResult:
    """A quiesced snapshot; crash-consistent instead only if the caller allows it."""
    name = f"{PREFIX}{job_id}"
    vm_name = read(vc, vm, ["name"]).get("name", vm._moId)
    description = f"Sendense backup job {job_id}"
    quiesced = True
    try:
        ref = take(vm, name, quiesce=True, description=description)
    except QUIESCE_FAULTS as exc:
        if not allow_crash_consistent:
            raise SnapshotError(
                f"quiesced snapshot of {vm_name} failed ({fault_message(exc)}); "
                "a crash-consistent snapshot is not allowed for this job"
            ) from None
        log.warning(
            "quiescing %s failed (%s): taking a crash-consistent snapshot instead",
            vm_name,
            fault_message(exc),
        )
        quiesced = False
        try:
            ref = take(vm, name, quiesce=False, description=description)
        except vmodl.MethodFault as exc2:
            raise SnapshotError(f"snapshot of {vm_name} failed: {fault_message(exc2)}") from None
    except vmodl.MethodFault as exc:
        raise SnapshotError(f"snapshot of {vm_name} failed: {fault_message(exc)}") from None
    return SnapshotResult(ref=ref, name=name, moref=ref._moId, quiesced=quiesced)


def snapshot_disks(vc: VCenter, snapshot_ref: Any) -> list[DiskInfo]:
    """The disks as the snapshot holds them: backing files and change ids at that moment."""
    props = read(vc, snapshot_ref, ["config.hardware.device"])
    return disks_from_devices(props.get("config.hardware.device"))


def remove_snapshot(vc: VCenter, snapshot_ref: Any) -> None:
    """Remove one snapshot (not its children) and consolidate its disks into the parent."""
    try:
        wait(snapshot_ref.RemoveSnapshot_Task(removeChildren=False, consolidate=True))
    except vmodl.fault.ManagedObjectNotFound:
        log.info("snapshot %s was already gone", snapshot_ref._moId)
    except vmodl.MethodFault as exc:
        raise SnapshotError(
            f"removing snapshot {snapshot_ref._moId} failed: {fault_message(exc)}"
        ) from None


@dataclass
class SnapshotNode:
    name: str
    moref: str
    snapshot: Any  # vim.vm.Snapshot


def _walk(vc: VCenter, trees: Iterable[dict[str, Any]]) -> Iterator[SnapshotNode]:
    for tree in trees:
        ref = tree["snapshot"]
        yield SnapshotNode(tree.get("name", ""), str(ref), ref.managed(vc))
        children = tree.get("childSnapshotList") or []
        yield from _walk(vc, children if isinstance(children, list) else [children])


def list_snapshots(vc: VCenter, vm: Any) -> list[SnapshotNode]:
    """Every snapshot of a VM, parents before children; empty when there are none."""
    # `rootSnapshot` first: asking for `snapshot` on a VM without one upsets vcsim.
    if not read(vc, vm, ["rootSnapshot"]).get("rootSnapshot"):
        return []
    info = read(vc, vm, ["snapshot.rootSnapshotList"]).get("snapshot.rootSnapshotList") or []
    return list(_walk(vc, info))


def remove_leftover_snapshots(
    vc: VCenter, vm: Any, keep_job_ids: Iterable[str] = frozenset()
) -> list[str]:
    """Remove ``sendense-*`` snapshots of jobs not in ``keep_job_ids``; their names."""
    keep = {f"{PREFIX}{job}" for job in keep_job_ids}
    removed = []
    for node in list_snapshots(vc, vm):
        if node.name.startswith(PREFIX) and node.name not in keep:
            log.info("removing leftover snapshot %s of %s", node.name, vm._moId)
            remove_snapshot(vc, node.snapshot)
            removed.append(node.name)
    return removed
