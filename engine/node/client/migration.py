"""One run of ``migrate``: connect, check the targets against the VM's disks, snapshot,
copy every disk at once (each on its own thread), remove the snapshot; each step owes
the clean-up of the ones before it, whatever ends the run."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVmomi import vmodl

from engine import vcenter
from engine.contract.progress import ConfigRecorded, SnapshotTaken
from engine.contract.status import BackupType
from engine.contract.targets import NbdTarget, NbdTargets
from engine.errors import SendenseError
from engine.node.client.copying import DiskCopies, DiskCopy
from engine.node.client.run import ClientRun
from engine.node.copier import CopyOptions
from engine.node.progress import Reporter
from engine.node.sources import NbdkitSource, open_source, vddk_source
from engine.vcenter.snapshots import SnapshotResult
from engine.vcenter.tasks import fault_message

log = logging.getLogger("sendense.client")


@dataclass
class DiskPlan:
    key: int
    file_name: str
    capacity: int
    change_id: str | None
    target: NbdTarget


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
                disks = [
                    DiskPlan(d.key, d.file_name, d.capacity_bytes, d.change_id, self.targets[d.key])
                    for d in vcenter.snapshot_disks(vc, snap.ref)
                    if d.key in self.targets
                ]

                def locate(name: str) -> Path:
                    return vcenter.datastore_file_path(vc, name)

                self.copy_disks(disks, locate, info.moref, snap.moref)
            except BaseException:
                self.remove_snapshot(vc, snap, failing=True)
                raise
            self.remove_snapshot(vc, snap, failing=False)

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
                copies.append(DiskCopy(d.key, d.capacity, src.uri, d.target.uri, d.change_id))
                self.check_cancel()
            options = CopyOptions.from_settings(
                self.settings.copier,
                # A full backup writes a new qcow2, which reads as zeroes.
                target_is_zero=self.args.backup_type == BackupType.FULL,
                max_rate_bps=self.args.max_rate * 2**20 if self.args.max_rate else None,
                # The point's digest table, for ``sendense verify``.
                chunk_size=self.settings.copier.chunk_size,
            )
            DiskCopies(self.job_id, self.reporter, self.cancel, options, self.reported).run(copies)
