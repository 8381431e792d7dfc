"""``JobManager``: the one object the hub's routes and rounds call for jobs.

Its methods are synchronous (database, qemu-nbd, HTTP to nodes) and run in worker
threads; each hands the shared ``JobContext`` to the module of its phase.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from engine.config import Settings
from engine.contract.hub import (
    BackupPreview,
    BackupQuery,
    BackupRequest,
    BackupStarted,
    DiskEvent,
    Job,
)
from engine.contract.progress import ProgressLine
from engine.contract.status import JobStatus
from engine.db.models import BackupJob
from engine.errors import NotFound
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportManager
from engine.hub.fleet import NodeWatch
from engine.hub.jobs import ending, following, restart, starting
from engine.hub.jobs.live import JobContext
from engine.hub.nodes import NodeRef


class JobManager:
    def __init__(
        self,
        settings: Settings,
        exports: ExportManager,
        bus: EventBus,
        token: str,
        fleet: NodeWatch | None = None,
    ) -> None:
        self.ctx = JobContext(settings, exports, bus, token, fleet=fleet)

    def start(self, request: BackupRequest) -> BackupStarted:
        return starting.start_job(self.ctx, request)

    def start_queued(self, backup_id: str, node: NodeRef) -> BackupStarted:
        """Start a queued job on the node the dispatch chose (``starting.start_queued``)."""
        return starting.start_queued(self.ctx, backup_id, node)

    def on_job_end(self, call: Callable[[str], None]) -> None:
        """Have ``call(backup_id)`` run after each job's end is recorded (in the thread
        that ended it: keep it short)."""
        self.ctx.on_end.append(call)

    def preview(self, request: BackupRequest) -> BackupPreview:
        return starting.preview_job(self.ctx, request)

    def get(self, backup_id: str) -> Job:
        return self.ctx.job(backup_id)

    def list_jobs(self, query: BackupQuery) -> list[Job]:
        """Jobs newest first, filtered by VM name and status; the queued ones alone are
        listed in queue order (first in line first). The page's disks and links are read
        in a few queries for the whole page, never one per job."""
        with self.ctx.session() as s:
            order = (
                (BackupJob.queue_order, BackupJob.id)
                if query.status == JobStatus.QUEUED
                else (BackupJob.created_at.desc(), BackupJob.id.desc())
            )
            select_jobs = select(BackupJob).options(selectinload(BackupJob.disks)).order_by(*order)
            if query.vm_name:
                select_jobs = select_jobs.where(BackupJob.vm_name == query.vm_name)
            if query.status:
                select_jobs = select_jobs.where(BackupJob.status == query.status)
            return self.ctx.views(s, list(s.scalars(select_jobs.limit(query.limit))))

    def active_ids(self) -> list[str]:
        return self.ctx.live.ids()

    def cancel(self, backup_id: str) -> Job:
        """A queued job is cancelled where it is; a running one through its node."""
        return ending.cancel(self.ctx, backup_id)

    def node_log(self, backup_id: str, lines: int) -> list[str]:
        node = self.ctx.node_of(backup_id)
        if node is None:
            raise NotFound(f"backup {backup_id} does not exist")
        return self.ctx.node(node).log(backup_id, lines)

    def ingest(self, backup_id: str, lines: list[ProgressLine]) -> None:
        following.ingest(self.ctx, backup_id, lines)

    def flush_progress(self) -> None:
        following.flush_progress(self.ctx)

    def disk_events(self) -> list[DiskEvent]:
        return following.disk_events(self.ctx)

    def watch(self) -> None:
        following.watch(self.ctx)

    def reconcile(self, spare: set[str] | None = None) -> list[str]:
        """After a restart; the exports in ``spare`` are restores' and stay up."""
        return restart.reconcile(self.ctx, spare)

    def shutdown(self) -> None:
        """Hub stopping: jobs go on in the node; exports stay up for the next hub to adopt."""
        self.ctx.live.clear()
