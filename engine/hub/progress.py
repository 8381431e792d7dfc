"""What the hub knows about a running job, kept in memory.

Progress lines arrive several times a second per disk; they update this state only.
Subscribers get at most a few ``disk`` events a second per disk (``take_sse``), and the
database gets the latest numbers every ``hub.progress_flush_seconds`` (``take_db``), so
a fast copy never turns into a write storm.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass, field

from pydantic import ConfigDict

from engine.contract.hub import DiskCounters, DiskEvent
from engine.contract.progress import (
    ChunkDigests,
    ClientDone,
    ClientError,
    ClientExit,
    DiskDone,
    DiskProgress,
    DiskStarted,
    ProgressLine,
    SnapshotTaken,
)
from engine.contract.status import BackupType, ClientOutcome, DiskStatus, JobStatus, SnapshotKind
from engine.hub.verify.table import TableError, TableWriter

log = logging.getLogger("sendense.hub.jobs")


class DiskState(DiskCounters):
    """A disk's live numbers (the contract's counters) and what only the hub keeps:
    a backup's disk has its digest table's writer (a restore's has none)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    export_name: str
    qcow2_path: str
    status: DiskStatus = DiskStatus.QEMU_STARTED
    change_id: str | None = None
    parent_qcow2_path: str | None = None  # an incremental's backing file, as planned
    error: str | None = None
    sse_dirty: bool = False
    db_dirty: bool = False
    digests: TableWriter | None = None

    def to_event(self, backup_id: str) -> DiskEvent:
        counters = {name: getattr(self, name) for name in DiskCounters.model_fields}
        return DiskEvent(backup_id=backup_id, **counters)

    def take_bytes(self, line: DiskProgress | DiskDone) -> None:
        self.bytes_done, self.bytes_zero = line.bytes_done, line.bytes_zero
        if isinstance(line, DiskProgress):
            self.bytes_total = line.bytes_total


@dataclass
class JobState:
    backup_id: str
    context_id: str  # one job per VM context at a time
    disks: dict[int, DiskState]
    snapshot_kind: SnapshotKind | None = None
    client_status: ClientOutcome | None = None  # the client's ``done`` status
    client_message: str | None = None
    errors: list[str] = field(default_factory=list)
    exit_code: int | None = None
    exit_message: str | None = None
    cancel_requested: bool = False
    # A fault the hub saw itself (an export died, the node lost the job).
    failure: str | None = None
    finalizing: bool = False
    last_event: float = field(default_factory=time.monotonic)

    @property
    def exited(self) -> bool:
        return self.exit_code is not None

    def apply(self, line: ProgressLine) -> bool:
        """Take one progress line; True when it changed the job's state (not just bytes).

        A line naming a disk the job does not have changes nothing.
        """
        self.last_event = time.monotonic()
        key = getattr(line, "disk_key", None)
        disk = self.disks.get(key) if key is not None else None
        match line:
            case DiskProgress() if disk is not None:
                disk.take_bytes(line)
                disk.rate_bps = line.rate_bps
                if disk.status == DiskStatus.QEMU_STARTED:
                    disk.status = DiskStatus.COPYING
                disk.sse_dirty = disk.db_dirty = True
                return False
            case DiskStarted() if disk is not None:
                disk.status = DiskStatus.COPYING
                disk.bytes_total = line.bytes_total or disk.bytes_total
                disk.capacity_bytes = line.capacity_bytes or disk.capacity_bytes
                if disk.mode == BackupType.INCREMENTAL and (
                    line.fallback or line.mode == BackupType.FULL
                ):
                    self._fall_back(disk, line.fallback or "the client copied it whole")
            case DiskDone() if disk is not None:
                disk.take_bytes(line)
                disk.bytes_done = max(disk.bytes_done, disk.bytes_total)
                disk.status = DiskStatus.COPIED
                disk.rate_bps = 0.0
                disk.change_id = line.change_id
            case SnapshotTaken():
                self.snapshot_kind = line.kind
            case ClientError():
                message = line.message or "unknown error"
                if disk is not None:
                    disk.error = message
                    message = f"disk {disk.disk_key}: {message}"
                self.errors.append(message)
            case ChunkDigests() if disk is not None:
                self._take_digests(disk, line)
                return False
            case ClientDone():
                self.client_status, self.client_message = line.status, line.message
            case ClientExit():
                self.exit_code, self.exit_message = line.exit_code, line.message
            case _:
                return False
        if disk is not None:
            disk.sse_dirty = disk.db_dirty = True
        return True

    def _fall_back(self, disk: DiskState, reason: str) -> None:
        """The client copies a disk planned incremental whole (vCenter no longer knows
        its change id): it sends a digest of every chunk, so the table starts empty
        instead of as the parent's, and the disk ends as a full (``ending``)."""
        disk.mode, disk.fallback_reason = BackupType.FULL, reason
        log.info("backup %s: disk %s copied whole: %s", self.backup_id, disk.disk_key, reason)
        if disk.digests is None:
            return
        path, capacity = disk.digests.path, disk.digests.capacity
        disk.digests.close()
        try:
            path.unlink(missing_ok=True)
            disk.digests = TableWriter(path, capacity)
        except OSError as exc:
            self.failure = f"disk {disk.disk_key}: digest table not reset: {exc}"

    def _take_digests(self, disk: DiskState, line: ChunkDigests) -> None:
        if disk.digests is None or self.failure:
            return
        try:
            raw = base64.b64decode(line.digests, validate=True)
            disk.digests.put(line.chunk_size, line.offset, raw)
        except (binascii.Error, TableError, OSError) as exc:
            self.failure = f"disk {disk.disk_key}: chunk digests not recorded: {exc}"

    def take_sse(self) -> list[DiskEvent]:
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

    def outcome(self) -> tuple[JobStatus, str | None]:
        """(status, reason) once the node reported the client's exit, or the hub saw a fault.

        Completed needs all of: the client's own ``done completed``, exit code 0, a
        ``disk_done`` for every disk, and each backup disk's digest table complete (a
        point ``verify`` could not check is not a good one). Anything less is a failure
        with the reason.
        """
        cancelled_by_client = self.exit_code == 130 or self.client_status == JobStatus.CANCELLED
        if self.cancel_requested and cancelled_by_client:
            return JobStatus.CANCELLED, "cancelled by request"
        if self.failure:
            return JobStatus.FAILED, self.failure
        unfinished = [k for k, d in sorted(self.disks.items()) if d.status != DiskStatus.COPIED]
        if self.exit_code == 0 and self.client_status == JobStatus.COMPLETED and not unfinished:
            for key, d in sorted(self.disks.items()):
                if d.digests is not None and not d.digests.complete:
                    return JobStatus.FAILED, f"disk {key}: {d.digests.describe()}"
            return JobStatus.COMPLETED, None
        if self.cancel_requested:
            return JobStatus.CANCELLED, "cancelled by request"
        reason = self.client_message or (self.errors[-1] if self.errors else None)
        if reason is None and self.exit_code not in (0, None):
            reason = f"sendense-backup-client exited with code {self.exit_code}"
            if self.exit_message:
                reason += f": {self.exit_message}"
        if reason is None and unfinished:
            reason = "the client ended without finishing disk(s) " + ", ".join(map(str, unfinished))
        if reason is None:
            reason = "the client ended without reporting completion"
        return JobStatus.FAILED, reason
