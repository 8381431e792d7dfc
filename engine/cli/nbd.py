"""``sendense nbd``: the disk copier on its own, for operators and for benchmarks."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer

from engine.cli.common import settings
from engine.contract.progress import DiskStarted
from engine.errors import BadInput
from engine.node.copier import CopyOptions, Progress, copy
from engine.node.progress import KINDS, disk_done, disk_progress, make_reporter

# What the progress lines of a lone copy say: it is no backup job, and its one disk key 0.
JOB_ID = "nbd-copy"
DISK_KEY = 0

nbd_app = typer.Typer(help="NBD tools: copy one export into another.", no_args_is_help=True)


@nbd_app.command("copy")
def nbd_copy(
    source: str = typer.Argument(..., help="Source NBD URI, e.g. nbd+unix:///?socket=/run/x.sock"),
    target: str = typer.Argument(..., help="Target NBD URI, e.g. nbd://127.0.0.1:10100/disk0"),
    target_is_zero: bool = typer.Option(
        False,
        "--target-is-zero",
        help="The target reads as zeroes already (a fresh qcow2): skip zero runs entirely.",
    ),
    connections: int | None = typer.Option(
        None, "--connections", min=1, max=16, help="Connections when both ends allow multi-conn."
    ),
    requests: int | None = typer.Option(
        None, "--requests", min=1, max=1024, help="Requests in flight per connection."
    ),
    request_size: int | None = typer.Option(
        None, "--request-size", min=4096, help="Bytes per read/write request."
    ),
    max_rate: float | None = typer.Option(
        None, "--max-rate", min=0.1, help="Limit to this many MiB/s (spare a busy datastore)."
    ),
    progress: str | None = typer.Option(
        None, "--progress", help="json, bar or none (default: bar on a terminal, else json)."
    ),
) -> None:
    """Copy SOURCE_URI into TARGET_URI: allocated data only, zeroes skipped or zeroed, flushed."""
    if progress is not None and progress not in KINDS:
        raise BadInput(f"--progress must be one of {', '.join(KINDS)}, not {progress!r}")
    opts = CopyOptions.from_settings(
        settings().copier,
        connections=connections,
        requests_in_flight=requests,
        request_size=request_size,
        target_is_zero=target_is_zero,
        max_rate_bps=max_rate * 2**20 if max_rate else None,
    )
    reporter = make_reporter(progress)
    cancel = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        cancel.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = False
    try:

        def on_progress(p: Progress) -> None:
            nonlocal started
            if not started:
                reporter.emit(
                    DiskStarted(job_id=JOB_ID, disk_key=DISK_KEY, bytes_total=p.bytes_total)
                )
                started = True
            reporter.emit(disk_progress(JOB_ID, DISK_KEY, p))

        final = copy(source, target, disk="copy", options=opts, progress=on_progress, cancel=cancel)
        reporter.emit(disk_done(JOB_ID, DISK_KEY, final, change_id=None))
    finally:
        reporter.close()
        for s, h in old.items():
            signal.signal(s, h)
