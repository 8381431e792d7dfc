"""``RestoreManager``: the one object the hub's restore routes and rounds call.

It holds the restore jobs' store, the instant exports and the disk restores; VM restores
join it through a method of their own. Its methods are synchronous (database, qemu-nbd,
qemu-img) and run in worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select

from engine.config import Settings
from engine.contract.progress import ProgressLine
from engine.contract.restore import (
    DiskRestoreRequest,
    ExportRequest,
    RestoreExport,
    RestoreJob,
    RestorePoint,
    RestorePointQuery,
    RestoreQuery,
    VMRestoreRequest,
)
from engine.db.models import RestoreDisk
from engine.errors import Conflict
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportManager
from engine.hub.restores import points
from engine.hub.restores.disk import DiskRestores
from engine.hub.restores.instant import InstantExports
from engine.hub.restores.merge import Merging, remove_leftovers
from engine.hub.restores.store import RestoreStore
from engine.hub.restores.vm import VMRestores


def utc_now() -> datetime:
    return datetime.now(UTC)


class RestoreManager:
    def __init__(
        self,
        settings: Settings,
        exports: ExportManager,
        bus: EventBus,
        token: str,
        verifying: Callable[[], set[str]] = set,
        merging: Merging | None = None,
    ) -> None:
        self.settings = settings
        self.verifying = verifying  # the points being verified (VerifyManager.busy_points)
        # Points being merged: nothing starts reading them (each start checks under its lock).
        self.merging = merging or Merging()
        self.exports = exports
        self.bus = bus
        self.token = token  # what a VM restore presents to its node
        self.store = RestoreStore(settings, bus)
        self.instant = InstantExports(settings, exports)
        self.disks = DiskRestores(settings, self.store)
        self.vms = VMRestores(settings, exports, bus, token, self.store)

    # -- restore points -------------------------------------------------------------------

    def points(self, query: RestorePointQuery) -> list[RestorePoint]:
        with self.store.session() as s:
            return points.list_points(s, query)

    def point(self, point_id: str) -> RestorePoint:
        with self.store.session() as s:
            return points.get_point(s, point_id)

    def delete_point(self, point_id: str) -> None:
        # Nothing of the point starts meanwhile: no instant export, no disk restore.
        if point_id in self.verifying():
            raise Conflict(f"point {point_id} is being verified: wait for the verification")
        starting = self.merging.starting(point_id)
        with starting, self.instant.lock, self.disks.lock, self.store.session() as s:
            points.delete_point(s, point_id, self.store.busy_points())

    # -- instant exports ------------------------------------------------------------------

    def export(self, point_id: str, request: ExportRequest) -> RestoreExport:
        with self.merging.starting(point_id):
            return self.instant.export(point_id, request, utc_now())

    def instant_exports(self) -> list[RestoreExport]:
        return self.instant.leased()

    def unexport(self, name: str) -> None:
        self.instant.unexport(name)

    # -- restore jobs ---------------------------------------------------------------------

    def restore_disk(self, request: DiskRestoreRequest) -> RestoreJob:
        with self.merging.starting(request.point_id):
            return self.disks.start(request)

    def restore_vm(self, request: VMRestoreRequest) -> RestoreJob:
        with self.merging.starting(request.point_id):
            return self.vms.start(request)

    def ingest(self, restore_id: str, lines: list[ProgressLine]) -> None:
        """A node's lines for a VM restore."""
        self.vms.ingest(restore_id, lines)

    def restores(self, query: RestoreQuery) -> list[RestoreJob]:
        return self.store.find(query)

    def restore(self, restore_id: str) -> RestoreJob:
        return self.store.view(restore_id)

    def cancel(self, restore_id: str) -> RestoreJob:
        return self.store.cancel(restore_id)

    # -- the hub's rounds -----------------------------------------------------------------

    def export_names(self) -> set[str]:
        """Exports restores own (instant exports, and the exports running restore jobs
        read): a restarted hub's backup reconcile must not stop them."""
        with self.store.session() as s:
            active = {r.id for r in self.store.active_rows(s)}
            rows = select(RestoreDisk.export_name).where(
                RestoreDisk.restore_job_id.in_(active), RestoreDisk.export_name.is_not(None)
            )
            jobs = {name for name in s.scalars(rows) if name}
        return self.instant.names() | jobs

    def reconcile(self, now: datetime | None = None) -> list[str]:
        """After a hub restart, once the backup reconcile adopted the exports it spared."""
        notes = self.disks.reconcile() + self.vms.reconcile()
        with self.store.session() as s:
            notes += remove_leftovers(s)
        notes += [f"instant export {n} ended" for n in self.instant.sweep(now or utc_now())]
        return notes

    def watch(self, now: datetime | None = None) -> list[str]:
        """The watch round: instant exports whose lease ran out end; VM restores are
        checked (their exports, their nodes)."""
        self.vms.watch()
        return self.instant.sweep(now or utc_now())

    def publish_changed(self) -> None:
        self.store.publish_changed()

    def flush(self) -> None:
        self.store.flush()

    def shutdown(self) -> None:
        """Hub stopping: disk restores stop (and fail); instant exports stay up for the
        next hub, which keeps those still leased."""
        self.disks.shutdown()
