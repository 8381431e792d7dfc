"""One run of ``migrate``: connect, check the targets against the VM's disks, snapshot,
copy every disk at once (each on its own thread), remove the snapshot; each step owes
the clean-up of the ones before it, whatever ends the run.

A disk given in ``--changed-since`` is an incremental: its target is an overlay on the
parent point's qcow2, and only the areas vCenter says changed since the parent's change
id are copied. When vCenter cannot say (tracking reset, a fault), the disk is copied
whole into the same overlay, every block written, and the line and the log say why.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVmomi import vmodl

from engine import vcenter
from engine.contract.progress import ConfigRecorded, SnapshotTaken
from engine.contract.status import BackupType
from engine.contract.targets import NbdTarget, NbdTargets
from engine.errors import BadInput, SendenseError
from engine.node.client.copying import DiskCopies, DiskCopy
from engine.node.client.run import ClientRun
from engine.node.copier import CopyOptions, Extent
from engine.node.copier.digests import align_extents
from engine.node.progress import Reporter
from engine.node.sources import NbdkitSource, open_source, vddk_source
from engine.vcenter.snapshots import SnapshotResult
from engine.vcenter.tasks import fault_message

log = logging.getLogger("sendense.client")


def _per_disk(
    values: Sequence[str], flag: str, what: str, targets: NbdTargets, longest: int
) -> dict[int, str]:
    """``KEY=TEXT`` flags as device key -> text (taken whole after the first '='), refused
    in one line when a flag does not parse or names a disk twice or without a target."""
    out: dict[int, str] = {}
    keys = set(targets.keys())
    for text in values:
        m = re.fullmatch(rf"(\d+)=(.{{1,{longest}}})", text)
        if not m:
            raise BadInput(f"{flag} {text!r}: expected KEY={what}")
        key = int(m[1])
        if key in out:
            raise BadInput(f"{flag} {text!r}: disk {key} is given twice")
        if key not in keys:
            raise BadInput(f"{flag} {text!r}: disk {key} has no --nbd-targets entry")
        out[key] = m[2]
    return out


def changed_since_of(
    values: Sequence[str], backup_type: str | None, targets: NbdTargets
) -> dict[int, str]:
    """``--changed-since KEY=CHANGE_ID`` flags as device key -> parent change id, refused
    in one line when a flag, a key or the ``--backup-type`` beside them does not fit.

    A change id is vCenter's text (spaces and '/' in it), taken whole after the first '='.
    """
    what = (
        "CHANGE_ID (a disk's device key, then its parent point's change id, at most 255 characters)"
    )
    out = _per_disk(values, "--changed-since", what, targets, longest=255)
    if backup_type == BackupType.FULL and out:
        raise BadInput("--changed-since makes an incremental: it cannot go with --backup-type full")
    if backup_type == BackupType.INCREMENTAL and not out:
        raise BadInput("--backup-type incremental needs --changed-since KEY=CHANGE_ID")
    return out


@dataclass
class DiskPlan:
    key: int
    file_name: str
    capacity: int
    change_id: str | None  # the snapshot's: what ``disk_done`` reports
    target: NbdTarget
    extents: list[Extent] | None = None  # None: the whole disk
    on_parent: bool = False  # the target is an overlay on the parent point's qcow2
    fallback: str | None = None

    def copy_of(self, source_uri: str) -> DiskCopy:
        incremental = self.extents is not None
        return DiskCopy(
            self.key,
            self.capacity,
            source_uri,
            self.target.uri,
            self.change_id,
            extents=self.extents,
            target_is_zero=not self.on_parent,
            mode=BackupType.INCREMENTAL if incremental else BackupType.FULL,
            fallback=self.fallback,
        )


def record_config(
    vc: vcenter.VCenter, vm: Any, snap: SnapshotResult, job_id: str, reporter: Reporter
) -> None:
    """Send the VM's configuration as of the snapshot, what a whole-VM restore of this
    point recreates it from. The disks are the backup: a configuration that cannot be
    read costs the point that kind of restore (it will say so), never the backup."""
    try:
        config = vcenter.vm_config(vc, vm, snap.ref)
    except Exception as exc:  # whatever went wrong, the copy goes on
        reason = fault_message(exc) if isinstance(exc, vmodl.MethodFault) else str(exc)
        log.warning(
            "job %s: the VM's configuration could not be read (%s): "
            "this point will not restore a whole VM",
            job_id,
            reason or type(exc).__name__,
        )
        return
    reporter.emit(ConfigRecorded(job_id=job_id, config=config))


class Migration(ClientRun):
    """One run of ``migrate``: the steps in order, with the clean-up each step owes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nbd_targets = NbdTargets.parse(self.args.nbd_targets)
        self.targets = self.nbd_targets.by_key()
        self.changed_since = changed_since_of(
            self.args.changed_since or (), self.args.backup_type, self.nbd_targets
        )
        self.full_reasons = _per_disk(
            self.args.full_reason or (), "--full-reason", "TEXT", self.nbd_targets, longest=1000
        )

    def run(self) -> None:
        a = self.args
        log.info("job %s: backing up %s from %s", self.job_id, a.vmware_path, a.vmware_endpoint)
        with self.connect() as vc:
            vm = vcenter.find_vm(vc, a.vmware_path)
            info = vcenter.vm_info(vc, vm)
            self.nbd_targets.match_disks(d.key for d in info.disks)
            removed = vcenter.remove_leftover_snapshots(vc, vm, keep_job_ids=[self.job_id])
            for name in removed:
                log.info("removed leftover snapshot %s", name)
            self.check_cancel()
            snap = vcenter.create_snapshot(
                vc, vm, self.job_id, allow_crash_consistent=a.allow_crash_consistent
            )
            try:
                log.info("snapshot %s (%s) taken", snap.name, snap.kind)
                self.reporter.emit(
                    SnapshotTaken(job_id=self.job_id, name=snap.name, kind=snap.kind)
                )
                record_config(vc, vm, snap, self.job_id, self.reporter)
                self.check_cancel()
                at_snapshot = vcenter.snapshot_disks(vc, snap.ref)
                # A disk added since the VM was read: the hub must refresh it first.
                self.nbd_targets.match_disks(d.key for d in at_snapshot)
                disks = [self.plan(vc, vm, snap, d) for d in at_snapshot]

                def locate(name: str) -> Path:
                    return vcenter.datastore_file_path(vc, name)

                self.copy_disks(disks, locate, info.moref, snap.moref)
            except BaseException:
                self.remove_snapshot(vc, snap, failing=True)
                raise
            self.remove_snapshot(vc, snap, failing=False)

    def plan(
        self, vc: vcenter.VCenter, vm: Any, snap: SnapshotResult, d: vcenter.DiskInfo
    ) -> DiskPlan:
        """How one disk is copied: whole, or (when it has a parent change id) the areas
        changed since then, grown to whole chunks as its digests need; whole again, said
        and logged, when vCenter cannot tell what changed."""
        plan = DiskPlan(d.key, d.file_name, d.capacity_bytes, d.change_id, self.targets[d.key])
        parent = self.changed_since.get(d.key)
        if parent is None:
            plan.fallback = self.full_reasons.get(d.key)
            if plan.fallback:
                log.info("disk %s: copied whole: %s", d.key, plan.fallback)
            return plan
        plan.on_parent = True
        try:
            areas = vcenter.query_changed_areas(vc, vm, snap.ref, d.key, d.capacity_bytes, parent)
        except vcenter.FullBackupNeeded as exc:
            plan.fallback = str(exc)
            log.warning("disk %s: copied whole, not incremental: %s", d.key, exc)
            return plan
        extents = [Extent(offset, length) for offset, length in areas if length]
        chunk = self.settings.copier.chunk_size
        plan.extents = align_extents(extents, chunk, d.capacity_bytes) if chunk else extents
        log.info(
            "disk %s: incremental since %s: %d changed area(s), %d of %d bytes to copy",
            d.key,
            parent,
            len(areas),
            sum(e.length for e in plan.extents),
            d.capacity_bytes,
        )
        return plan

    @staticmethod
    def remove_snapshot(vc: vcenter.VCenter, snap: SnapshotResult, *, failing: bool) -> None:
        """Remove the snapshot; if that fails while the job is failing already, log it and
        let the first error be the one reported."""
        log.info("removing snapshot %s", snap.name)
        try:
            vcenter.remove_snapshot(vc, snap.ref)
        except SendenseError as exc:
            if not failing:
                raise
            log.error("%s: the snapshot %s is left behind", exc, snap.name)
            return
        log.info("snapshot %s removed", snap.name)

    def vddk_factory(self, disk: DiskPlan, vm_moref: str, snap_moref: str) -> NbdkitSource:
        return vddk_source(
            self.vddk_login(),
            vm_moref=vm_moref,
            snapshot_moref=snap_moref,
            file_name=disk.file_name,
            settings=self.settings.vddk,
        )

    def copy_disks(
        self, disks: list[DiskPlan], locate: Callable[[str], Path], vm_moref: str, snap: str
    ) -> None:
        """Every disk at once, each on its own thread; the first failure cancels the rest."""
        with ExitStack() as stack:
            # Sources start here, on the main thread: nbdkit's --exit-with-parent follows
            # the thread that started it.
            copies: list[DiskCopy] = []
            for d in disks:
                src = open_source(
                    self.args.source,
                    d.file_name,
                    locate=locate,
                    vddk=functools.partial(self.vddk_factory, d, vm_moref, snap),
                )
                stack.callback(src.close)
                log.info("disk %s: reading %s through nbdkit %s", d.key, d.file_name, src.plugin)
                copies.append(d.copy_of(src.uri))
                self.check_cancel()
            options = CopyOptions.from_settings(
                self.settings.copier,
                max_rate_bps=self.args.max_rate * 2**20 if self.args.max_rate else None,
                # The point's digest table, for ``sendense verify``.
                chunk_size=self.settings.copier.chunk_size,
            )
            DiskCopies(self.job_id, self.reporter, self.cancel, options, self.reported).run(copies)
