"""One run of ``migrate``: connect, check the targets against the VM's disks, snapshot,
copy every disk at once (each on its own thread), remove the snapshot; each step owes
the clean-up of the ones before it, whatever ends the run."""

from __future__ import annotations

import argparse
import functools
import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVmomi import vmodl

from engine import vcenter
from engine.config import Settings
from engine.contract.fields import normalise_thumbprint, split_host
from engine.contract.progress import ClientError, ConfigRecorded, DiskStarted, SnapshotTaken
from engine.contract.status import BackupType
from engine.contract.targets import NbdTarget, NbdTargets
from engine.errors import SendenseError
from engine.node.copier import CopyCancelled, CopyOptions, Progress, copy
from engine.node.progress import Reporter, disk_done, disk_progress
from engine.node.sources import NbdkitSource, VddkLogin, check_vddk, open_source, vddk_source
from engine.vcenter.snapshots import SnapshotResult
from engine.vcenter.tasks import fault_message

log = logging.getLogger("sendense.client")

LOG_RATE_SECONDS = 10.0


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


class Migration:
    """One run of ``migrate``: the steps in order, with the clean-up each step owes."""

    def __init__(
        self,
        args: argparse.Namespace,
        job_id: str,
        password: str,
        settings: Settings,
        reporter: Reporter,
    ) -> None:
        self.args = args
        self.job_id = job_id
        self.password = password
        self.settings = settings
        self.reporter = reporter
        self.cancel = threading.Event()
        self.nbd_targets = NbdTargets.parse(args.nbd_targets)
        self.targets = self.nbd_targets.by_key()
        tp = args.vmware_thumbprint
        self.thumbprint = normalise_thumbprint(tp) if tp else None
        # Errors already sent as an `error` line with their disk key.
        self.reported: set[int] = set()

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise CopyCancelled("cancelled")

    def run(self) -> None:
        a = self.args
        log.info("job %s: backing up %s from %s", self.job_id, a.vmware_path, a.vmware_endpoint)
        with vcenter.connect(
            a.vmware_endpoint,
            a.vmware_username,
            self.password,
            thumbprint=self.thumbprint,
            insecure=a.vmware_insecure,
        ) as vc:
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
        check_vddk(self.settings.vddk)
        host, port = split_host(self.args.vmware_endpoint)
        login = VddkLogin(host, port, self.args.vmware_username, self.password, self.thumbprint)
        return vddk_source(
            login,
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
            uris: dict[int, str] = {}
            for d in disks:
                src = open_source(
                    self.args.source,
                    d.file_name,
                    locate=locate,
                    vddk=functools.partial(self.vddk_factory, d, vm_moref, snap),
                )
                stack.callback(src.close)
                log.info("disk %s: reading %s through nbdkit %s", d.key, d.file_name, src.plugin)
                uris[d.key] = src.uri
                self.check_cancel()
            errors: list[BaseException] = []
            threads = [
                threading.Thread(
                    target=self._copy_one, args=(d, uris[d.key], errors), name=f"disk-{d.key}"
                )
                for d in disks
            ]
            for t in threads:
                t.start()
            # Join with a timeout so that signal handlers run on this (the main) thread.
            while alive := [t for t in threads if t.is_alive()]:
                alive[0].join(0.2)
            real = [e for e in errors if not isinstance(e, CopyCancelled)]
            if real:
                raise real[0]
            if errors:
                raise errors[0]

    def _copy_one(self, d: DiskPlan, source_uri: str, errors: list[BaseException]) -> None:
        opts = CopyOptions.from_settings(
            self.settings.copier,
            # A full backup writes a new qcow2, which reads as zeroes.
            target_is_zero=self.args.backup_type == BackupType.FULL,
            max_rate_bps=self.args.max_rate * 2**20 if self.args.max_rate else None,
        )
        last_log = time.monotonic()

        def on_progress(p: Progress) -> None:
            nonlocal last_log
            self.reporter.emit(disk_progress(self.job_id, d.key, p))
            if time.monotonic() - last_log >= LOG_RATE_SECONDS:
                last_log = time.monotonic()
                log.info(
                    "disk %s: %d of %d MiB, %.1f MiB/s",
                    d.key,
                    p.bytes_done >> 20,
                    p.bytes_total >> 20,
                    p.rate_bps / 2**20,
                )

        log.info("disk %s: copying %d bytes into %s", d.key, d.capacity, d.target.uri)
        self.reporter.emit(DiskStarted(job_id=self.job_id, disk_key=d.key, bytes_total=d.capacity))
        try:
            final = copy(
                source_uri,
                d.target.uri,
                disk=str(d.key),
                options=opts,
                progress=on_progress,
                cancel=self.cancel,
            )
        except BaseException as exc:
            errors.append(exc)
            self.cancel.set()
            if not isinstance(exc, CopyCancelled):
                self.reported.add(id(exc))
                self.reporter.emit(
                    ClientError(job_id=self.job_id, message=str(exc), disk_key=d.key)
                )
            return
        log.info(
            "disk %s: done, %d bytes (%d as zero) at %.1f MiB/s over %d connection(s)",
            d.key,
            final.bytes_done,
            final.bytes_zero,
            final.rate_bps / 2**20,
            final.connections,
        )
        self.reporter.emit(disk_done(self.job_id, d.key, final, d.change_id))
