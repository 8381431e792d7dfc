"""One run of ``restore``: write a restored VM's disks from the hub's read-only exports.

The hub has created the VM already (``--vmware-path``) and exports the restore point's
disks read-only (``--nbd-sources``, keyed by the new VM's disk keys). This connects to
vCenter, checks that every disk of the VM has exactly one source, opens a writable sink
per disk (``sinks``), and copies every disk at once, the copier in the other direction.
A new disk reads as zeroes, so zero runs are skipped and stay holes. Whatever ends the
run, every sink's nbdkit is stopped before it returns.
"""

from __future__ import annotations

import functools
import logging
from contextlib import ExitStack
from typing import Any

from engine import vcenter
from engine.contract.inventory import DiskInfo
from engine.contract.targets import NbdTargets
from engine.node.client.copying import DiskCopies, DiskCopy
from engine.node.client.run import ClientRun
from engine.node.copier import CopyOptions
from engine.node.sinks import open_sink
from engine.node.sources import NbdkitSource, vddk_source

log = logging.getLogger("sendense.client")


class Restore(ClientRun):
    """One run of ``restore``: the steps in order, each sink closed whatever happens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nbd_sources = NbdTargets.parse(self.args.nbd_sources)

    def run(self) -> None:
        a = self.args
        log.info("job %s: restoring into %s on %s", self.job_id, a.vmware_path, a.vmware_endpoint)
        with ExitStack() as sinks:
            copies: list[DiskCopy] = []
            sources = self.nbd_sources.by_key()
            # The vCenter session is needed only to find the VM and its files; it ends
            # before the copy, however long that takes.
            with self.connect() as vc:
                info = vcenter.vm_info(vc, vcenter.find_vm(vc, a.vmware_path))
                self.nbd_sources.match_disks((d.key for d in info.disks), what="nbd source")
                self.check_cancel()
                # Sinks start here, on the main thread: nbdkit's --exit-with-parent
                # follows the thread that started it.
                for disk in info.disks:
                    sink = open_sink(
                        a.target,
                        disk.file_name,
                        disk.capacity_bytes,
                        locate=functools.partial(vcenter.datastore_file_path, vc),
                        vddk=functools.partial(self.vddk_sink, disk, info.moref),
                    )
                    sinks.callback(sink.close)
                    log.info(
                        "disk %s: writing %s through nbdkit %s",
                        disk.key,
                        disk.file_name,
                        sink.plugin,
                    )
                    copies.append(
                        DiskCopy(disk.key, disk.capacity_bytes, sources[disk.key].uri, sink.uri)
                    )
                    self.check_cancel()
            # A new disk reads as zeroes (DiskCopy's target_is_zero): zero runs stay holes.
            options = CopyOptions.from_settings(
                self.settings.copier,
                max_rate_bps=a.max_rate * 2**20 if a.max_rate else None,
            )
            DiskCopies(self.job_id, self.reporter, self.cancel, options, self.reported).run(copies)

    def vddk_sink(self, disk: DiskInfo, vm_moref: str) -> NbdkitSource:
        return vddk_source(
            self.vddk_login(),
            vm_moref=vm_moref,
            snapshot_moref=None,
            file_name=disk.file_name,
            settings=self.settings.vddk,
            writable=True,
        )
