"""A job on this node: its client process, what it printed, and what the hub has yet to get."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from engine.contract.node import NodeJob
from engine.contract.progress import ProgressLine
from engine.contract.status import NodeJobState

STDERR_TAIL = 50


@dataclass
class ClientJob:
    """One ``sendense-backup-client`` run: ``running`` → ``exited`` → ``finished`` (its
    ``exit`` line delivered to the hub)."""

    job_id: str
    vm_name: str
    log_path: Path
    proc: asyncio.subprocess.Process
    # The hub's route for this job's lines: a backup's or a restore's events.
    events_path: str
    started: float = field(default_factory=time.time)
    state: NodeJobState = NodeJobState.RUNNING
    exit_code: int | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL))
    # Lines not yet delivered to the hub, oldest first.
    outbox: list[ProgressLine] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def post(self, line: ProgressLine) -> None:
        """Queue a line for the hub and wake the relay."""
        self.outbox.append(line)
        self.wake.set()

    def view(self, lines: int = 0) -> NodeJob:
        """The node API's answer for this job, with the last ``lines`` lines of its log."""
        return NodeJob(
            job_id=self.job_id,
            vm_name=self.vm_name,
            state=self.state,
            pid=self.proc.pid,
            exit_code=self.exit_code,
            started_at=self.started,
            log_file=str(self.log_path),
            log_tail=self.log_tail(lines),
            undelivered_events=len(self.outbox),
        )

    def log_tail(self, lines: int) -> list[str]:
        """The log file's last lines; the client's stderr when it wrote no log."""
        if lines <= 0:
            return []
        return tail(self.log_path, lines) or list(self.stderr_tail)[-lines:]


def tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return data.splitlines()[-lines:]
