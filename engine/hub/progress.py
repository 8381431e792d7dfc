"""What the hub knows about a running job, kept in memory.

Progress lines arrive several times a second per disk; they update this state only.
Subscribers get at most a few ``disk`` events a second per disk (``take_sse``), and the
database gets the latest numbers every ``hub.progress_flush_seconds`` (``take_db``), so
a fast copy never turns into a write storm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# Progress-line types a client prints (docs/contracts.md) plus the node's own ``exit``.
KNOWN_TYPES = {"snapshot", "disk_started", "progress", "disk_done", "error", "done", "exit"}


@dataclass
class DiskState:
    disk_key: int
    export_name: str
    port: int | None
    qcow2_path: str
    status: str = "qemu_started"
    bytes_done: int = 0
    bytes_total: int = 0
    bytes_zero: int = 0
    rate_bps: float = 0.0
    change_id: str | None = None
    error: str | None = None
    sse_dirty: bool = False
    db_dirty: bool = False

    def to_event(self, job_id: str) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "disk_key": self.disk_key,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "bytes_zero": self.bytes_zero,
            "rate_bps": self.rate_bps,
            "status": self.status,
        }


@dataclass
class JobState:
    backup_id: str
    vm_name: str
    node_url: str
    disks: dict[int, DiskState]
    snapshot_kind: str | None = None
    client_status: str | None = None  # the client's ``done`` status
    client_message: str | None = None
    errors: list[str] = field(default_factory=list)
    exit_code: int | None = None
    exit_message: str | None = None
    cancel_requested: bool = False
    # A fault the hub saw itself (an export died, the node lost the job).
    failure: str | None = None
    finalizing: bool = False
    last_event: float = field(default_factory=time.monotonic)
    job_dirty: bool = False

    @property
    def exited(self) -> bool:
        return self.exit_code is not None

    def apply(self, line: dict[str, Any]) -> bool:
        """Take one progress line; True when it changed the job's state (not just bytes)."""
        self.last_event = time.monotonic()
        kind = line.get("type")
        disk = self._disk(line.get("disk_key"))
        if kind == "progress" and disk is not None:
            _take_bytes(disk, line)
            disk.rate_bps = float(line.get("rate_bps") or 0.0)
            if disk.status == "qemu_started":
                disk.status = "copying"
            disk.sse_dirty = disk.db_dirty = True
            return False
        if kind == "disk_started" and disk is not None:
            disk.status = "copying"
            disk.bytes_total = int(line.get("bytes_total") or disk.bytes_total)
        elif kind == "disk_done" and disk is not None:
            _take_bytes(disk, line)
            disk.bytes_done = max(disk.bytes_done, disk.bytes_total)
            disk.status = "copied"
            disk.rate_bps = 0.0
            disk.change_id = line.get("change_id")
        elif kind == "snapshot":
            self.snapshot_kind = line.get("kind")
        elif kind == "error":
            message = str(line.get("message") or "unknown error")
            if disk is not None:
                disk.error = message
                message = f"disk {disk.disk_key}: {message}"
            self.errors.append(message)
        elif kind == "done":
            self.client_status = str(line.get("status") or "")
            self.client_message = line.get("message")
        elif kind == "exit":
            self.exit_code = int(line.get("exit_code", -1))
            self.exit_message = line.get("message")
        else:
            return False
        if disk is not None:
            disk.sse_dirty = disk.db_dirty = True
        self.job_dirty = True
        return True

    def _disk(self, key: Any) -> DiskState | None:
        try:
            return self.disks.get(int(key))
        except (TypeError, ValueError):
            return None

    def take_sse(self) -> list[dict[str, Any]]:
        """Disk events changed since the last call."""
        out = []
        for disk in self.disks.values():
            if disk.sse_dirty:
                disk.sse_dirty = False
                out.append(disk.to_event(self.backup_id))
        return out

    def take_db(self) -> list[DiskState]:
        """Disks whose numbers changed since the last database write."""
        out = [d for d in self.disks.values() if d.db_dirty]
        for disk in out:
            disk.db_dirty = False
        return out

    def outcome(self) -> tuple[str, str | None]:
        """(status, reason) once the node reported the client's exit, or the hub saw a fault.

        Completed needs all of: the client's own ``done completed``, exit code 0, and a
        ``disk_done`` for every disk. Anything less is a failure with the reason.
        """
        if self.cancel_requested and (self.exit_code == 130 or self.client_status == "cancelled"):
            return "cancelled", "cancelled by request"
        if self.failure:
            return "failed", self.failure
        unfinished = [k for k, d in sorted(self.disks.items()) if d.status != "copied"]
        if self.exit_code == 0 and self.client_status == "completed" and not unfinished:
            return "completed", None
        if self.cancel_requested:
            return "cancelled", "cancelled by request"
        reason = self.client_message or (self.errors[-1] if self.errors else None)
        if reason is None and self.exit_code not in (0, None):
            reason = f"sendense-backup-client exited with code {self.exit_code}"
            if self.exit_message:
                reason += f": {self.exit_message}"
        if reason is None and unfinished:
            reason = "the client ended without finishing disk(s) " + ", ".join(map(str, unfinished))
        if reason is None:
            reason = "the client ended without reporting completion"
        return "failed", reason


def _take_bytes(disk: DiskState, line: dict[str, Any]) -> None:
    for name in ("bytes_done", "bytes_total", "bytes_zero"):
        value = line.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            setattr(disk, name, value)
