"""What a run of the client is, whichever way its disks go (``migrate`` reads a VM's
disks into the hub's exports, ``restore`` writes the hub's exports into a VM's disks):
its login, its cancel flag, the errors it already reported, and the ways it reaches
vCenter and VDDK with that login."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine import vcenter
from engine.config import Settings
from engine.contract.fields import normalise_thumbprint, split_host
from engine.node.copier import CopyCancelled
from engine.node.progress import Reporter
from engine.node.sources import VddkLogin, check_vddk


class ClientRun:
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
        tp = args.vmware_thumbprint
        self.thumbprint = normalise_thumbprint(tp) if tp else None
        # Errors already sent as an `error` line with their disk key.
        self.reported: set[int] = set()

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise CopyCancelled("cancelled")

    @contextmanager
    def connect(self) -> Iterator[vcenter.VCenter]:
        """A vCenter session with the run's login, pinned to its thumbprint."""
        a = self.args
        with vcenter.connect(
            a.vmware_endpoint,
            a.vmware_username,
            self.password,
            thumbprint=self.thumbprint,
            insecure=a.vmware_insecure,
        ) as vc:
            yield vc

    def vddk_login(self) -> VddkLogin:
        """The login nbdkit's vddk plugin takes, once VDDK is known to be installed."""
        check_vddk(self.settings.vddk)
        host, port = split_host(self.args.vmware_endpoint)
        return VddkLogin(host, port, self.args.vmware_username, self.password, self.thumbprint)
