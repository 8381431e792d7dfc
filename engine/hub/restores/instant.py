"""Instant access: a point's disk served read-only over NBD, for a while.

The qemu-nbd is the export manager's (``--read-only``, through the qcow2 chain, bound
like a backup's exports); the ``restore_exports`` row is its lease. Leases end on their
TTL (``sweep``, with the clock as a parameter), and a restarted hub keeps the exports
whose lease still runs and whose qemu-nbd survived (``reconcile``), ending the rest, so
an export is never left behind by a restart. Exporting a disk that is exported already
hands back the same export with its lease extended: one qemu-nbd per point and disk.
"""

from __future__ import annotations

import logging
import secrets
import string
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from engine.config import Settings
from engine.contract.fields import url_safe
from engine.contract.restore import ExportRequest
from engine.contract.restore import RestoreExport as ExportView
from engine.db.models import BackupJob, utcnow
from engine.db.models import RestoreExport as Lease
from engine.db.session import session_scope
from engine.errors import NotFound
from engine.hub.exports.errors import ExportError, validate_name
from engine.hub.exports.manager import ExportManager
from engine.hub.exports.state import Export
from engine.hub.restores.points import completed_point, point_disk
from engine.hub.views import _utc

log = logging.getLogger("sendense.hub.restores")

NAME_VM_CHARS = 100
# Backup exports' names end in digits (``<vm>-disk<key>-<unix seconds>[-n]``); these end
# in letters, so the two kinds never share a name.
SUFFIX_CHARS = 8


def export_name(vm_name: str, disk_key: int) -> str:
    """``point-<vm>-disk<key>-<8 random letters>``: safe in an NBD URI, hard to guess."""
    suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(SUFFIX_CHARS))
    name = f"point-{url_safe(vm_name)[:NAME_VM_CHARS]}-disk{disk_key}-{suffix}"
    validate_name(name)
    return name


def naive(now: datetime) -> datetime:
    """The database's naive UTC for an aware time."""
    return now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now


class InstantExports:
    def __init__(self, settings: Settings, exports: ExportManager) -> None:
        self.settings = settings
        self.exports = exports
        # One change of leases at a time: two asks for the same disk make one qemu-nbd.
        self.lock = threading.Lock()

    # -- export / unexport ----------------------------------------------------------------

    def export(self, point_id: str, request: ExportRequest, now: datetime) -> ExportView:
        """Serve the point's disk read-only until ``now`` + TTL (later, when it already was)."""
        expires = naive(now) + timedelta(seconds=request.ttl_seconds)
        with self.lock:
            with session_scope(self.settings.db_url) as s:
                row = completed_point(s, point_id)
                disk = point_disk(row, request.disk_key)
                lease = s.scalars(
                    select(Lease).where(
                        Lease.backup_job_id == point_id, Lease.disk_key == request.disk_key
                    )
                ).first()
                vm_name, qcow2 = row.vm_name, Path(disk.qcow2_path)
                if lease is not None:
                    lease.expires_at = max(lease.expires_at, expires)
                    name, created, expires = lease.name, lease.created_at, lease.expires_at
                else:
                    name, created = export_name(vm_name, request.disk_key), utcnow()
            running = self._alive(name)
            if running is None:
                running = self.exports.start(name, qcow2, read_only=True)
            if lease is None:
                with session_scope(self.settings.db_url) as s:
                    s.add(
                        Lease(
                            name=name,
                            backup_job_id=point_id,
                            disk_key=request.disk_key,
                            created_at=created,
                            expires_at=expires,
                        )
                    )
        log.info("instant export %s of %s until %s", name, point_id, expires)
        return self._view(running, point_id, vm_name, request.disk_key, created, expires)

    def _alive(self, name: str) -> Export | None:
        """The running export of that name; None (its leftovers swept) when its qemu-nbd died."""
        export = self.exports.get(name)
        if export is None:
            return None
        try:
            self.exports.check(name)
        except ExportError as exc:
            log.warning("instant export %s died: %s", name, exc)
            self._stop(name)
            return None
        return export

    def unexport(self, name: str) -> None:
        with self.lock:
            with session_scope(self.settings.db_url) as s:
                lease = s.get(Lease, name)
                if lease is None:
                    raise NotFound(f"there is no instant export named {name}")
                s.delete(lease)
            self._stop(name)
        log.info("instant export %s ended on request", name)

    def _stop(self, name: str) -> None:
        try:
            self.exports.stop(name)
        except ExportError as exc:
            log.warning("stopping instant export %s: %s", name, exc)

    # -- look -----------------------------------------------------------------------------

    def names(self) -> set[str]:
        with session_scope(self.settings.db_url) as s:
            return set(s.scalars(select(Lease.name)))

    def leased(self) -> list[ExportView]:
        """Live instant exports, the soonest to expire first."""
        views = []
        with session_scope(self.settings.db_url) as s:
            for lease in s.scalars(select(Lease).order_by(Lease.expires_at, Lease.name)):
                export = self.exports.get(lease.name)
                job = s.get(BackupJob, lease.backup_job_id)
                if export is not None and job is not None:
                    views.append(
                        self._view(
                            export,
                            lease.backup_job_id,
                            job.vm_name,
                            lease.disk_key,
                            lease.created_at,
                            lease.expires_at,
                        )
                    )
        return views

    @staticmethod
    def _view(
        export: Export,
        point_id: str,
        vm_name: str,
        disk_key: int,
        created: datetime | None,
        expires: datetime,
    ) -> ExportView:
        return ExportView(
            name=export.name,
            point_id=point_id,
            vm_name=vm_name,
            disk_key=disk_key,
            host=export.host,
            port=export.port,
            uri=export.uri,
            pid=export.pid,
            created_at=_utc(created),
            expires_at=expires.replace(tzinfo=UTC),
        )

    # -- leases over time -----------------------------------------------------------------

    def sweep(self, now: datetime) -> list[str]:
        """End every export whose lease ran out by ``now``, and forget those whose qemu-nbd
        died; the names ended. After a hub restart (once the exports that the backup
        reconcile spared are adopted) this is the reconcile too: what survived and is
        still leased goes on, the rest ends."""
        cutoff = naive(now)
        ended = []
        with self.lock:
            with session_scope(self.settings.db_url) as s:
                leases = [(lease.name, lease.expires_at) for lease in s.scalars(select(Lease))]
            for name, expires in leases:
                if expires > cutoff and self._alive(name) is not None:
                    continue
                self._stop(name)
                with session_scope(self.settings.db_url) as s:
                    lease = s.get(Lease, name)
                    if lease is not None:
                        s.delete(lease)
                ended.append(name)
                why = "lease ran out" if expires <= cutoff else "qemu-nbd is gone"
                log.info("instant export %s ended: %s", name, why)
        return ended
