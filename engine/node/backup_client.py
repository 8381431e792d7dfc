"""``sendense-backup-client migrate``: snapshot a VM, copy every disk into its NBD target, clean up.

The seed's flags, kept so that the node (and any script that knew the original) can call
it unchanged; the password comes from a file or standard input instead of argv. Whatever
happens (an error, SIGTERM, SIGINT) the snapshot is removed and no nbdkit outlives the
process.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from engine import vcenter
from engine.config import Settings, ensure_dirs, get_settings
from engine.contract.fields import normalise_thumbprint, split_host
from engine.contract.targets import NbdTarget, NbdTargets
from engine.errors import BadInput, SendenseError
from engine.node.copier import CopyCancelled, CopyOptions, Progress, copy
from engine.node.progress import KINDS, Reporter, make_reporter, progress_fields
from engine.node.sources import (
    SOURCE_KINDS,
    NbdkitSource,
    VddkLogin,
    check_vddk,
    open_source,
    vddk_source,
)
from engine.vcenter.snapshots import SnapshotResult

log = logging.getLogger("sendense.client")

EXIT_CODES = """\
exit codes:
  0    done: every disk copied and flushed, snapshot removed
  1    unexpected internal error (see the log)
  2    bad arguments (flags, --nbd-targets, password file)
  3    vCenter error (login, certificate thumbprint, VM not found)
  4    snapshot error (create or remove)
  5    copy error (NBD read, write or flush; the message names disk and offset)
  6    disk source error (nbdkit, VDDK)
  130  cancelled by SIGINT or SIGTERM (snapshot removed)
"""
LOG_RATE_SECONDS = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendense-backup-client",
        description="Copy the disks of a vSphere VM into NBD targets (qcow2 exports).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser(
        "migrate",
        help="snapshot a VM and copy each disk into its NBD target",
        description="Snapshot the VM (quiesced), copy every disk in parallel into its NBD "
        "target, record each disk's change id, remove the snapshot.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--vmware-endpoint", required=True, help="vCenter host, or host:port")
    m.add_argument("--vmware-username", required=True)
    pw = m.add_mutually_exclusive_group()
    pw.add_argument(
        "--vmware-password-file",
        metavar="PATH",
        help="read the password from PATH ('-' for standard input): the safe way",
    )
    pw.add_argument(
        "--vmware-password",
        help="the password itself: visible to every user of this machine; "
        "prefer --vmware-password-file",
    )
    m.add_argument("--vmware-path", required=True, help="the VM: /DC/vm/[folders/]NAME")
    m.add_argument(
        "--nbd-targets",
        required=True,
        help="<disk key>:nbd://<host>:<port>/<export>[,...], one per disk of the VM",
    )
    m.add_argument("--job-id", required=True, help="names the snapshot (sendense-<job id>)")
    m.add_argument(
        "--vmware-thumbprint",
        help="the vCenter certificate's SHA-256 fingerprint (hex, colons optional)",
    )
    m.add_argument(
        "--vmware-insecure",
        action="store_true",
        help="skip certificate pinning: for labs only, never in production",
    )
    m.add_argument("--source", choices=SOURCE_KINDS, default="auto", help="where disks are read")
    m.add_argument(
        "--allow-crash-consistent",
        action="store_true",
        help="fall back to a crash-consistent snapshot when quiescing fails",
    )
    m.add_argument(
        "--progress", choices=KINDS, help="json lines, bars, or none (default: bar on a tty)"
    )
    m.add_argument("--log-file", type=Path, help="default: <log dir>/backup-<job id>.log")
    m.add_argument("--backup-type", choices=["full"], default="full")
    m.add_argument(
        "--max-rate",
        type=float,
        metavar="MIB_S",
        help="limit each disk's copy to this many MiB/s (spare a busy datastore)",
    )
    return parser


def read_password(args: argparse.Namespace) -> str:
    if args.vmware_password is not None:
        print(
            "warning: --vmware-password is visible to every user of this machine "
            "(ps, /proc); use --vmware-password-file",
            file=sys.stderr,
        )
        return str(args.vmware_password)
    if args.vmware_password_file is None:
        raise BadInput(
            "give the vCenter password with --vmware-password-file PATH (or - for stdin)"
        )
    if args.vmware_password_file == "-":
        value = sys.stdin.readline()
    else:
        try:
            value = Path(args.vmware_password_file).read_text()
        except OSError as exc:
            raise BadInput(
                f"cannot read password file {args.vmware_password_file}: {exc.strerror}"
            ) from None
    value = value.rstrip("\r\n")
    if not value:
        raise BadInput("the vCenter password is empty")
    return value


class _Redact(logging.Filter):
    """Belt and braces: whatever a library logs, the password never reaches the log file."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg = message.replace(self.secret, "********")
            record.args = None
        return True


def setup_logging(path: Path, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redact(password))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


@dataclass
class DiskPlan:
    key: int
    file_name: str
    capacity: int
    change_id: str | None
    target: NbdTarget


class Migration:
    """One run of ``migrate``: the steps in order, with the clean-up each step owes."""

    def __init__(
        self, args: argparse.Namespace, password: str, settings: Settings, reporter: Reporter
    ) -> None:
        self.args = args
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
        log.info("job %s: backing up %s from %s", a.job_id, a.vmware_path, a.vmware_endpoint)
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
            removed = vcenter.remove_leftover_snapshots(vc, vm, keep_job_ids=[a.job_id])
            for name in removed:
                log.info("removed leftover snapshot %s", name)
            self.check_cancel()
            snap = vcenter.create_snapshot(
                vc, vm, a.job_id, allow_crash_consistent=a.allow_crash_consistent
            )
            try:
                log.info("snapshot %s (%s) taken", snap.name, snap.kind)
                self.reporter.emit("snapshot", name=snap.name, kind=snap.kind)
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
            target_is_zero=self.args.backup_type == "full",  # a full backup writes a new qcow2
            max_rate_bps=self.args.max_rate * 2**20 if self.args.max_rate else None,
        )
        last_log = time.monotonic()

        def on_progress(p: Progress) -> None:
            nonlocal last_log
            self.reporter.emit("progress", **progress_fields(d.key, p))
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
        self.reporter.emit("disk_started", disk_key=d.key, bytes_total=d.capacity)
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
                self.reporter.emit("error", message=str(exc), disk_key=d.key)
            return
        log.info(
            "disk %s: done, %d bytes (%d as zero) at %.1f MiB/s over %d connection(s)",
            d.key,
            final.bytes_done,
            final.bytes_zero,
            final.rate_bps / 2**20,
            final.connections,
        )
        self.reporter.emit(
            "disk_done",
            disk_key=d.key,
            bytes_done=final.bytes_done,
            bytes_zero=final.bytes_zero,
            change_id=d.change_id,
        )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(run(args))


def run(args: argparse.Namespace) -> int:
    """The exit code of one ``migrate``; errors print one line and end in the log."""
    reporter: Reporter | None = None
    migration: Migration | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: cancelling, then removing the snapshot", signal.strsignal(signum))
        if migration is not None:
            migration.cancel.set()
        else:
            raise CopyCancelled("cancelled before the backup started")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        settings = get_settings()
        ensure_dirs(settings)
        password = read_password(args)
        setup_logging(args.log_file or settings.logs / f"backup-{args.job_id}.log", password)
        reporter = make_reporter(args.progress, args.job_id)
        migration = Migration(args, password, settings, reporter)
        migration.run()
        if migration.cancel.is_set():
            raise CopyCancelled("cancelled")
        log.info("job %s completed", args.job_id)
        _finish(reporter, "done", status="completed")
        return 0
    except CopyCancelled:
        log.warning("job %s cancelled", args.job_id)
        _finish(reporter, "done", status="cancelled")
        return 130
    except SendenseError as exc:
        log.error("job %s failed: %s", args.job_id, exc)
        if migration is None or id(exc) not in migration.reported:
            _finish(reporter, "error", message=str(exc))
        _finish(reporter, "done", status="failed", message=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        log.exception("job %s failed unexpectedly", args.job_id)
        _finish(reporter, "done", status="failed", message=f"internal error: {exc}")
        print(f"error: internal error: {exc} (details in the log)", file=sys.stderr)
        return 1
    finally:
        if reporter is not None:
            reporter.close()


def _finish(reporter: Reporter | None, type_: str, **fields: Any) -> None:
    if reporter is not None:
        reporter.emit(type_, **fields)


if __name__ == "__main__":
    main()
