"""Progress of a backup as it happens: JSON lines (the node relays them), rich bars, or nothing.

Every reporter takes the same events (see docs/contracts.md, "Progress lines") so the
client emits each event once and the chosen reporter decides how it looks.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, Any, Protocol

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
    def emit(self, type_: str, **fields: Any) -> None: ...

    def close(self) -> None: ...


class JsonReporter:
    """One JSON object per line, flushed at once: the node reads them as they come."""

    def __init__(self, job_id: str, out: IO[str] | None = None) -> None:
        self.job_id = job_id
        self.out = out or sys.stdout
        self.lock = threading.Lock()

    def emit(self, type_: str, **fields: Any) -> None:
        line = json.dumps({"type": type_, "job_id": self.job_id, "ts": time.time(), **fields})
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def close(self) -> None:
        pass


class BarReporter:
    """One rich bar per disk, for an operator watching a terminal."""

    def __init__(self, job_id: str, console: Console | None = None) -> None:
        self.job_id = job_id
        self.bars = disk_bars(console)
        self.tasks: dict[Any, TaskID] = {}
        self.lock = threading.Lock()
        self.bars.start()

    def emit(self, type_: str, **fields: Any) -> None:
        with self.lock:
            key = fields.get("disk_key")
            if type_ == "disk_started":
                self.tasks[key] = self.bars.add_task(
                    f"disk {key}", total=fields["bytes_total"], note=""
                )
            elif type_ in ("progress", "disk_done") and key in self.tasks:
                zero = fields.get("bytes_zero", 0) / 2**20
                self.bars.update(
                    self.tasks[key], completed=fields["bytes_done"], note=f"{zero:.0f} MiB zero"
                )
            elif type_ == "snapshot":
                self.bars.console.print(f"snapshot {fields['name']} ({fields['kind']})")
            elif type_ == "error":
                where = f"disk {key}: " if key is not None else ""
                self.bars.console.print(f"[red]error[/]: {where}{fields['message']}")
            elif type_ == "done":
                self.bars.console.print(f"{fields['status']} {fields.get('message') or ''}")

    def close(self) -> None:
        self.bars.stop()


class NullReporter:
    def emit(self, type_: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


def make_reporter(kind: str | None, job_id: str) -> Reporter:
    """``None`` means: bars on a terminal, JSON lines otherwise (a pipe to the node)."""
    if kind is None:
        kind = "bar" if sys.stdout.isatty() else "json"
    if kind == "json":
        return JsonReporter(job_id)
    if kind == "bar":
        return BarReporter(job_id)
    return NullReporter()


def progress_fields(disk_key: int | str, p: CopyProgress) -> dict[str, Any]:
    """The fields of a ``progress`` line for one disk."""
    return {
        "disk_key": disk_key,
        "bytes_done": p.bytes_done,
        "bytes_total": p.bytes_total,
        "bytes_zero": p.bytes_zero,
        "rate_bps": round(p.rate_bps),
    }
