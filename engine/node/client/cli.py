"""``sendense-backup-client migrate`` and ``restore``: flags, the password's way in, exit codes.

``migrate``'s flags are the seed's, kept so that the node (and any script that knew the
original) can call it unchanged; ``restore`` takes the same login, VM and job flags. The
password comes from a file or standard input instead of argv. Whatever happens (an
error, SIGTERM, SIGINT) a backup's snapshot is removed and no nbdkit outlives the
process. The exit code of an error is its class's (engine/errors.py).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from pydantic import TypeAdapter, ValidationError

from engine.config import ensure_dirs, get_settings
from engine.contract.fields import JobId
from engine.contract.progress import ClientDone, ClientError
from engine.contract.status import BackupType, ClientOutcome, JobStatus
from engine.errors import (
    BadInput,
    Cancelled,
    CopyError,
    SendenseError,
    SnapshotError,
    SourceError,
    VCenterError,
)
from engine.node.client.logs import setup_logging
from engine.node.client.migration import Migration
from engine.node.client.restore import Restore
from engine.node.copier import CopyCancelled
from engine.node.progress import KINDS, Reporter, make_reporter
from engine.node.sinks import SINK_KINDS
from engine.node.sources import SOURCE_KINDS

log = logging.getLogger("sendense.client")

_EXITS = (
    (0, "done: every disk copied and flushed (a backup's snapshot removed)"),
    (SendenseError.exit_code, "unexpected internal error (see the log)"),
    (
        BadInput.exit_code,
        "bad arguments (flags, --nbd-targets/--nbd-sources, --changed-since, password file)",
    ),
    (VCenterError.exit_code, "vCenter error (login, certificate thumbprint, VM not found)"),
    (SnapshotError.exit_code, "snapshot error (create or remove)"),
    (
        CopyError.exit_code,
        "copy error (NBD read, write or flush; the message names disk and offset)",
    ),
    (SourceError.exit_code, "disk source error (nbdkit, VDDK; a restore's disk targets too)"),
    (Cancelled.exit_code, "cancelled by SIGINT or SIGTERM (a backup's snapshot removed)"),
)
EXIT_CODES = "exit codes:\n" + "".join(f"  {code:<4} {text}\n" for code, text in _EXITS)
_JOB_ID: TypeAdapter[str] = TypeAdapter(JobId)


def _vcenter_job_args(p: argparse.ArgumentParser) -> None:
    """What every command takes: the vCenter login, the VM, the job, its progress and log."""
    p.add_argument("--vmware-endpoint", required=True, help="vCenter host, or host:port")
    p.add_argument("--vmware-username", required=True)
    pw = p.add_mutually_exclusive_group()
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
    p.add_argument("--vmware-path", required=True, help="the VM: /DC/vm/[folders/]NAME")
    p.add_argument("--job-id", required=True, help="the hub's id of the job")
    p.add_argument(
        "--vmware-thumbprint",
        help="the vCenter certificate's SHA-256 fingerprint (hex, colons optional)",
    )
    p.add_argument(
        "--vmware-insecure",
        action="store_true",
        help="skip certificate pinning: for labs only, never in production",
    )
    p.add_argument(
        "--progress", choices=KINDS, help="json lines, bars, or none (default: bar on a tty)"
    )
    p.add_argument("--log-file", type=Path, help="default: <log dir>/<backup|restore>-<job id>.log")
    p.add_argument(
        "--max-rate",
        type=float,
        metavar="MIB_S",
        help="limit each disk's copy to this many MiB/s (spare a busy datastore)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendense-backup-client",
        description="Copy the disks of a vSphere VM into NBD targets (qcow2 exports), "
        "or write a restored VM's disks from NBD sources.",
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
    _vcenter_job_args(m)
    m.add_argument(
        "--nbd-targets",
        required=True,
        help="<disk key>:nbd://<host>:<port>/<export>[,...], one per disk of the VM",
    )
    m.add_argument("--source", choices=SOURCE_KINDS, default="auto", help="where disks are read")
    m.add_argument(
        "--allow-crash-consistent",
        action="store_true",
        help="fall back to a crash-consistent snapshot when quiescing fails",
    )
    m.add_argument(
        "--backup-type",
        choices=[BackupType.FULL.value, BackupType.INCREMENTAL.value],
        help="default: incremental with --changed-since, full without",
    )
    m.add_argument(
        "--changed-since",
        action="append",
        default=[],
        metavar="KEY=CHANGE_ID",
        help="copy only what changed on disk KEY since CHANGE_ID (its parent point's), "
        "into a target that is an overlay on that point; repeat per incremental disk. "
        "A disk whose changes vCenter cannot tell is copied whole, and says why",
    )
    m.add_argument(
        "--full-reason",
        action="append",
        default=[],
        metavar="KEY=TEXT",
        help="why disk KEY is copied whole where an incremental was asked for (the hub "
        "decided it): said in the log and the disk's disk_started line",
    )
    r = sub.add_parser(
        "restore",
        help="write each disk of a (new, restored) VM from its NBD source",
        description="Copy every NBD source (the hub's read-only exports of a restore "
        "point) in parallel into the VM's disk of the same key; zero runs stay holes.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _vcenter_job_args(r)
    r.add_argument(
        "--nbd-sources",
        required=True,
        help="<disk key>:nbd://<host>:<port>/<export>[,...], one per disk of the VM",
    )
    r.add_argument("--target", choices=SINK_KINDS, default="auto", help="how the disks are written")
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


def job_id_of(text: str) -> str:
    """``--job-id`` as every progress line carries it; refused here, in one line, when no
    line could."""
    try:
        return _JOB_ID.validate_python(text)
    except ValidationError as exc:
        reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise BadInput(f"--job-id {text!r}: {reason}") from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(run(args))


# Each command's run, and the prefix of its default log file's name.
COMMANDS: dict[str, tuple[type[Migration] | type[Restore], str]] = {
    "migrate": (Migration, "backup"),
    "restore": (Restore, "restore"),
}


def run(args: argparse.Namespace) -> int:
    """The exit code of one ``migrate`` or ``restore``; errors print one line and end in
    the log."""
    reporter: Reporter | None = None
    job: Migration | Restore | None = None
    job_id = args.job_id
    kind, log_prefix = COMMANDS[args.command]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: cancelling, then cleaning up", signal.strsignal(signum))
        if job is not None:
            job.cancel.set()
        else:
            raise CopyCancelled("cancelled before the job started")

    def finish(outcome: ClientOutcome, message: str | None = None, *, error: bool = False) -> None:
        """The run's last lines (an ``error`` line first when asked), when a reporter is
        there to take them: a refused ``--job-id`` leaves none, as no line could carry it."""
        if reporter is None:
            return
        if error and message:
            reporter.emit(ClientError(job_id=job_id, message=message))
        reporter.emit(ClientDone(job_id=job_id, status=outcome, message=message))

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    # Until the log file is set up, log records go nowhere: the one error line says it all.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        job_id = job_id_of(args.job_id)
        settings = get_settings()
        ensure_dirs(settings)
        password = read_password(args)
        setup_logging(args.log_file or settings.logs / f"{log_prefix}-{job_id}.log", password)
        reporter = make_reporter(args.progress)
        job = kind(args, job_id, password, settings, reporter)
        job.run()
        if job.cancel.is_set():
            raise CopyCancelled("cancelled")
        log.info("job %s completed", job_id)
        finish(JobStatus.COMPLETED)
        return 0
    except Cancelled as exc:
        log.warning("job %s cancelled", job_id)
        finish(JobStatus.CANCELLED)
        return exc.exit_code
    except SendenseError as exc:
        log.error("job %s failed: %s", job_id, exc)
        reported = job is not None and id(exc) in job.reported
        finish(JobStatus.FAILED, str(exc), error=not reported)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        log.exception("job %s failed unexpectedly", job_id)
        finish(JobStatus.FAILED, f"internal error: {exc}")
        print(f"error: internal error: {exc} (details in the log)", file=sys.stderr)
        return SendenseError.exit_code
    finally:
        if reporter is not None:
            reporter.close()
