"""Progress of a copy as it happens: JSON lines (the node relays them), rich bars, or nothing.

Every reporter takes the same lines, the contract's progress models, so the client
builds each line once and the chosen reporter decides how it looks.
"""

from __future__ import annotations

import sys
import threading
from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from engine.contract.progress import (
    ClientDone,
    ClientError,
    DiskDone,
    DiskProgress,
    DiskStarted,
    ProgressLine,
    SnapshotTaken,
)
from engine.node.copier import Progress as CopyProgress

KINDS = ("json", "bar", "none")


def disk_bars(console: Console | None = None) -> Progress:
    """One bar per disk with its bytes, rate, ETA and a note: the client's ``--progress
    bar`` and ``sendense backup start --wait`` show the same thing the same way."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
    )


class Reporter(Protocol):
    def emit(self, line: ProgressLine) -> None: ...

    def close(self) -> None: ...


class JsonReporter:
    """One JSON object per line, flushed at once: the node reads them as they come."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.lock = threading.Lock()

    def emit(self, line: ProgressLine) -> None:
        text = line.model_dump_json()
        with self.lock:
            self.out.write(text + "\n")
            self.out.flush()

    def close(self) -> None:
        pass


class BarReporter:
    """One rich bar per disk, for an operator watching a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.bars = disk_bars(console)
        self.tasks: dict[int, TaskID] = {}
        self.lock = threading.Lock()
        self.bars.start()

    def emit(self, line: ProgressLine) -> None:
        with self.lock:
            self._show(line)

    def _show(self, line: ProgressLine) -> None:
        print_ = self.bars.console.print
        match line:
            case DiskStarted():
                self.tasks[line.disk_key] = self.bars.add_task(
                    f"disk {line.disk_key}", total=line.bytes_total, note=""
                )
            case DiskProgress() | DiskDone() if line.disk_key in self.tasks:
                self.bars.update(
                    self.tasks[line.disk_key],
                    completed=line.bytes_done,
                    note=f"{line.bytes_zero / 2**20:.0f} MiB zero",
                )
            case SnapshotTaken():
                print_(f"snapshot {line.name} ({line.kind})")
            case ClientError():
                where = f"disk {line.disk_key}: " if line.disk_key is not None else ""
                print_(f"[red]error[/]: {where}{line.message}")
            case ClientDone():
                print_(f"{line.status} {line.message or ''}")

    def close(self) -> None:
        self.bars.stop()


class NullReporter:
    def emit(self, line: ProgressLine) -> None:
        pass

    def close(self) -> None:
        pass


def make_reporter(kind: str | None) -> Reporter:
    """``None`` means: bars on a terminal, JSON lines otherwise (a pipe to the node)."""
    if kind is None:
        kind = "bar" if sys.stdout.isatty() else "json"
    if kind == "json":
        return JsonReporter()
    if kind == "bar":
        return BarReporter()
    return NullReporter()


def disk_progress(job_id: str, disk_key: int, p: CopyProgress) -> DiskProgress:
    """The ``progress`` line of one disk's copy."""
    return DiskProgress(
        job_id=job_id,
        disk_key=disk_key,
        bytes_done=p.bytes_done,
        bytes_total=p.bytes_total,
        bytes_zero=p.bytes_zero,
        rate_bps=round(p.rate_bps),
    )


def disk_done(job_id: str, disk_key: int, p: CopyProgress, change_id: str | None) -> DiskDone:
    """The ``disk_done`` line of a finished copy."""
    return DiskDone(
        job_id=job_id,
        disk_key=disk_key,
        bytes_done=p.bytes_done,
        bytes_zero=p.bytes_zero,
        rate_bps=round(p.rate_bps),
        change_id=change_id,
    )
