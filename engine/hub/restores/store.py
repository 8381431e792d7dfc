"""Restore jobs: their rows, their live numbers, their events, and how each is cancelled.

Both kinds of restore job (a disk into a file, run by the hub itself; a VM into vCenter,
written by a node) keep their state here, so that the API, the event stream and the
console see one shape (``contract.restore.RestoreJob``) whatever runs the copy. Numbers
change many times a second in memory; subscribers get them on the SSE round
(``publish_changed``) and the database on the flush round (``flush``) and at the end.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.fields import url_safe
from engine.contract.hub import DiskCounters
from engine.contract.restore import (
    DiskRestoreRequest,
    RestoreJob,
    RestoreJobDisk,
    RestoreQuery,
    VMRestoreRequest,
)
from engine.contract.status import ACTIVE_JOB, DiskFormat, DiskStatus, JobStatus, RestoreKind
from engine.db.models import RestoreDisk, utcnow
from engine.db.models import RestoreJob as RestoreRow
from engine.db.session import session_scope
from engine.errors import Conflict, NotFound
from engine.hub.events import EventBus

log = logging.getLogger("sendense.hub.restores")

ID_NAME_CHARS = 160


class LiveDisk(DiskCounters):
    """A disk of a running restore: the contract's counters and its error."""

    status: DiskStatus = DiskStatus.QEMU_STARTED
    error: str | None = None


@dataclass
class LiveRestore:
    """A restore job while it runs: numbers in memory, and the way to cancel it."""

    restore_id: str
    kind: RestoreKind
    point_id: str
    disks: dict[int, LiveDisk]
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    # Set by whatever runs the restore: asks it to stop (it then finishes as cancelled).
    canceller: Callable[[], None] | None = None
    sse_dirty: bool = True
    db_dirty: bool = False
    done: threading.Event = field(default_factory=threading.Event)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value else None


class RestoreStore:
    def __init__(self, settings: Settings, bus: EventBus) -> None:
        self.settings = settings
        self.bus = bus
        self.lock = threading.RLock()
        self._live: dict[str, LiveRestore] = {}

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.settings.db_url) as s:
            yield s

    # -- starting -------------------------------------------------------------------------

    @staticmethod
    def new_id(s: Session, vm_name: str) -> str:
        """``restore-<vm>-<unix seconds>``, ``-2``, ``-3``… when taken."""
        base = f"restore-{url_safe(vm_name)[:ID_NAME_CHARS]}-{int(time.time())}"
        candidate, n = base, 1
        while s.get(RestoreRow, candidate) is not None:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def add(self, s: Session, row: RestoreRow) -> LiveRestore:
        """Insert the pending row (with its disks) in the caller's session and follow it."""
        s.add(row)
        s.flush()
        live = LiveRestore(
            restore_id=row.id,
            kind=RestoreKind(row.kind),
            point_id=row.backup_job_id,
            disks={
                d.disk_key: LiveDisk(
                    disk_key=d.disk_key, status=DiskStatus(d.status), bytes_total=d.bytes_total
                )
                for d in row.disks
            },
        )
        with self.lock:
            self._live[row.id] = live
        return live

    def running(self, restore_id: str, **columns: str | None) -> None:
        """Mark the job running (and set ``vm_moref``/``vm_path`` or disks' ``target``s
        given as columns of the row)."""
        with self.session() as s:
            row = s.get(RestoreRow, restore_id)
            if row is None:
                return
            if row.status == JobStatus.PENDING:
                row.status, row.started_at = JobStatus.RUNNING, utcnow()
            for name, value in columns.items():
                setattr(row, name, value)
        self.touch(restore_id)

    def place_disks(self, restore_id: str, places: dict[int, tuple[int, str, str]]) -> None:
        """Where each disk (by its source key) is written, once known: (the key the new
        VM gave it, its target file, the export it is read from). A VM restore learns
        them only when vCenter has made the VM; its disks are keyed by the new keys from
        then on, in memory and in the rows."""
        with self.session() as s:
            rows = list(
                s.scalars(select(RestoreDisk).where(RestoreDisk.restore_job_id == restore_id))
            )
            # Through keys no disk has (negative), so that no two rows of the job share
            # one on the way (the keys are unique per job).
            for i, row in enumerate(rows):
                row.disk_key = -1 - i
            s.flush()
            for row in rows:
                key, target, export_name = places[row.source_disk_key]
                row.disk_key, row.target, row.export_name = key, target, export_name
        with self.lock:
            live = self._live.get(restore_id)
            if live is not None:
                by_source = {src: key for src, (key, _, _) in places.items()}
                live.disks = {
                    by_source[k]: d.model_copy(update={"disk_key": by_source[k]})
                    for k, d in live.disks.items()
                }
                live.sse_dirty = True
        self.touch(restore_id)

    # -- progress -------------------------------------------------------------------------

    def live(self, restore_id: str) -> LiveRestore | None:
        with self.lock:
            return self._live.get(restore_id)

    def active_ids(self) -> list[str]:
        with self.lock:
            return list(self._live)

    def busy_points(self) -> set[str]:
        """Restore points a running restore reads: they cannot be deleted."""
        with self.lock:
            return {r.point_id for r in self._live.values()}

    def update_disk(
        self,
        restore_id: str,
        disk_key: int,
        *,
        status: DiskStatus | None = None,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        bytes_zero: int | None = None,
        rate_bps: float | None = None,
        error: str | None = None,
    ) -> None:
        with self.lock:
            live = self._live.get(restore_id)
            disk = live.disks.get(disk_key) if live else None
            if live is None or disk is None:
                return
            for name, value in (
                ("status", status),
                ("bytes_done", bytes_done),
                ("bytes_total", bytes_total),
                ("bytes_zero", bytes_zero),
                ("rate_bps", rate_bps),
                ("error", error),
            ):
                if value is not None:
                    setattr(disk, name, value)
            live.sse_dirty = live.db_dirty = True

    def touch(self, restore_id: str) -> None:
        """Publish the job now (a change of state, not just of numbers)."""
        with contextlib.suppress(NotFound):
            self.bus.publish(self.view(restore_id))

    def publish_changed(self) -> None:
        """The SSE round: every running restore whose numbers moved since the last round."""
        with self.lock:
            changed = [r.restore_id for r in self._live.values() if r.sse_dirty]
            for restore_id in changed:
                self._live[restore_id].sse_dirty = False
        for restore_id in changed:
            self.touch(restore_id)

    def flush(self) -> None:
        """The database round: the latest numbers of running restores."""
        with self.lock:
            dirty = [r for r in self._live.values() if r.db_dirty]
            numbers = {r.restore_id: {k: d.model_copy() for k, d in r.disks.items()} for r in dirty}
            for r in dirty:
                r.db_dirty = False
        if not numbers:
            return
        with self.session() as s:
            for restore_id, disks in numbers.items():
                self._write_disks(s, restore_id, disks)

    @staticmethod
    def _write_disks(s: Session, restore_id: str, disks: dict[int, LiveDisk]) -> None:
        rows = s.scalars(select(RestoreDisk).where(RestoreDisk.restore_job_id == restore_id))
        total_done = 0
        for row in rows:
            live = disks.get(row.disk_key)
            if live is None:
                continue
            row.status = live.status
            row.bytes_done, row.bytes_total = live.bytes_done, live.bytes_total
            row.bytes_zero = live.bytes_zero
            row.error_message = live.error or row.error_message
            total_done += live.bytes_done
        job = s.get(RestoreRow, restore_id)
        if job is not None:
            job.bytes_transferred = total_done

    # -- ending ---------------------------------------------------------------------------

    def finish(self, restore_id: str, status: JobStatus, error: str | None = None) -> RestoreJob:
        """Write the job's end: its status, reason and final numbers; every disk not
        completed takes a failed or cancelled job's status. Publishes it; idempotent."""
        with self.lock:
            live = self._live.pop(restore_id, None)
        with self.session() as s:
            row = s.get(RestoreRow, restore_id)
            if row is None:
                raise NotFound(f"restore {restore_id} does not exist")
            if live is not None:
                if status != JobStatus.COMPLETED:
                    for disk in live.disks.values():
                        if disk.status != DiskStatus.COMPLETED:
                            disk.status = DiskStatus(status.value)
                            disk.rate_bps = 0.0
                self._write_disks(s, restore_id, live.disks)
            if not JobStatus(row.status).finished:
                row.status, row.error_message = status, error
                row.completed_at = utcnow()
        if live is not None:
            live.done.set()
        log.info("restore %s %s%s", restore_id, status, f": {error}" if error else "")
        view = self.view(restore_id)
        self.bus.publish(view)
        return view

    def cancel(self, restore_id: str, wait: float = 20.0) -> RestoreJob:
        """Ask the running restore to stop and wait (a while) for it to end."""
        live = self.live(restore_id)
        if live is None:
            view = self.view(restore_id)  # NotFound for an unknown id
            raise Conflict(f"restore {restore_id} is not running ({view.status})")
        live.cancel_requested.set()
        if live.canceller is not None:
            live.canceller()
        live.done.wait(wait)
        return self.view(restore_id)

    # -- views ----------------------------------------------------------------------------

    def view(self, restore_id: str) -> RestoreJob:
        with self.session() as s:
            row = s.get(RestoreRow, restore_id)
            if row is None:
                raise NotFound(f"restore {restore_id} does not exist")
            return self._view(row)

    def find(self, query: RestoreQuery) -> list[RestoreJob]:
        """Restore jobs newest first."""
        with self.session() as s:
            rows = select(RestoreRow).order_by(RestoreRow.created_at.desc(), RestoreRow.id.desc())
            if query.point_id:
                rows = rows.where(RestoreRow.backup_job_id == query.point_id)
            if query.status:
                rows = rows.where(RestoreRow.status == query.status)
            return [self._view(r) for r in s.scalars(rows.limit(query.limit))]

    def active_rows(self, s: Session) -> list[RestoreRow]:
        """Rows still pending or running (after a hub restart: the ones to decide)."""
        return list(s.scalars(select(RestoreRow).where(RestoreRow.status.in_(ACTIVE_JOB))))

    def _view(self, row: RestoreRow) -> RestoreJob:
        with self.lock:
            live = self._live.get(row.id)
            live_disks = {k: d.model_copy() for k, d in live.disks.items()} if live else {}
        disks = []
        for d in row.disks:
            now = live_disks.get(d.disk_key)
            disks.append(
                RestoreJobDisk(
                    disk_key=d.disk_key,
                    status=now.status if now else DiskStatus(d.status),
                    bytes_done=now.bytes_done if now else d.bytes_done,
                    bytes_total=now.bytes_total if now else d.bytes_total,
                    bytes_zero=now.bytes_zero if now else d.bytes_zero,
                    rate_bps=now.rate_bps if now else 0.0,
                    source_path=d.source_path,
                    target=d.target,
                    export_name=d.export_name,
                    error_message=(now.error if now else None) or d.error_message,
                )
            )
        kind = RestoreKind(row.kind)
        fmt: DiskFormat | None = None
        power_on = False
        if kind == RestoreKind.DISK:
            fmt = DiskRestoreRequest.model_validate_json(row.request).format
        else:
            power_on = VMRestoreRequest.model_validate_json(row.request).power_on
        return RestoreJob(
            restore_id=row.id,
            kind=kind,
            point_id=row.backup_job_id,
            vm_name=row.vm_name,
            target=row.target,
            status=JobStatus(row.status),
            node_id=row.node_id,
            vm_path=row.vm_path,
            format=fmt,
            power_on=power_on,
            created_at=_utc(row.created_at),
            started_at=_utc(row.started_at),
            completed_at=_utc(row.completed_at),
            error_message=row.error_message,
            bytes_done=sum(d.bytes_done for d in disks),
            bytes_total=sum(d.bytes_total for d in disks),
            bytes_zero=sum(d.bytes_zero for d in disks),
            rate_bps=sum(d.rate_bps for d in disks),
            disks=disks,
        )
