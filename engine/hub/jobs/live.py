"""The jobs this hub follows now, in memory, and everything a phase of a job shares.

Requests, the watch round and the finalize threads all touch the same running jobs, so
their states live here behind one lock; ``JobContext`` carries that and the hub's parts
(settings, exports, event bus, node token) to the modules that start, follow and end jobs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.hub import Job
from engine.contract.status import JobStatus
from engine.db.models import BackupJob
from engine.db.session import session_scope
from engine.errors import Conflict, NotFound
from engine.hub.events import EventBus
from engine.hub.exports.errors import ExportError
from engine.hub.exports.manager import ExportManager
from engine.hub.fleet import NodeWatch
from engine.hub.nodes import NodeClient, NodeRef, node_ref
from engine.hub.progress import JobState
from engine.hub.views import job_links, job_view

log = logging.getLogger("sendense.hub.jobs")


class LiveJobs:
    """Running jobs by backup id, the VM contexts being started, and an event per job
    that is set when it ends (a cancel waits on it)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._jobs: dict[str, JobState] = {}
        # The VMs claimed now, each with what holds it (a backup starting, a merge).
        self._starting: dict[str, str] = {}
        self._done: dict[str, threading.Event] = {}
        # When a node stopped answering about a job, to fail it once that lasts too long.
        self.node_lost_since: dict[str, float] = {}

    @contextlib.contextmanager
    def claim(
        self, context_id: str, vm_name: str, holder: str = "a backup starting"
    ) -> Iterator[None]:
        """The right to start a job on this VM: one start at a time, none while one runs
        (a chain merge holds it too, as ``holder`` says)."""
        with self.lock:
            if any(j.context_id == context_id for j in self._jobs.values()):
                raise Conflict(f"VM {vm_name} already has a backup running")
            if context_id in self._starting:
                raise Conflict(f"VM {vm_name} is busy: {self._starting[context_id]}")
            self._starting[context_id] = holder
        try:
            yield
        finally:
            with self.lock:
                self._starting.pop(context_id, None)

    def register(self, state: JobState) -> None:
        with self.lock:
            self._jobs[state.backup_id] = state
            self._done[state.backup_id] = threading.Event()

    def forget(self, backup_id: str) -> None:
        with self.lock:
            self._jobs.pop(backup_id, None)
            self.node_lost_since.pop(backup_id, None)
            done = self._done.pop(backup_id, None)
        if done is not None:
            done.set()

    def get(self, backup_id: str) -> JobState | None:
        with self.lock:
            return self._jobs.get(backup_id)

    def done_event(self, backup_id: str) -> threading.Event | None:
        with self.lock:
            return self._done.get(backup_id)

    def ids(self) -> list[str]:
        with self.lock:
            return list(self._jobs)

    def states(self) -> list[JobState]:
        with self.lock:
            return list(self._jobs.values())

    def begin_end(self, state: JobState) -> bool:
        """Mark the job as ending; False when something else already does."""
        with self.lock:
            if state.finalizing:
                return False
            state.finalizing = True
            return True

    def clear(self) -> None:
        with self.lock:
            self._jobs.clear()


class Waiting:
    """Why queued jobs wait, as the last dispatch round saw it: a reason per job at the
    head of the queue, or one for every job when nothing at all could start."""

    def __init__(self) -> None:
        self._each: dict[str, str] = {}
        self._everyone: str | None = None

    def update(self, each: dict[str, str], everyone: str | None) -> None:
        self._each, self._everyone = each, everyone  # one swap: readers see either

    def get(self, backup_id: str) -> str | None:
        return self._everyone or self._each.get(backup_id)


@dataclass
class JobContext:
    settings: Settings
    exports: ExportManager
    bus: EventBus
    token: str
    # The nodes' heartbeat: which node a job goes to, and which nodes are gone.
    fleet: NodeWatch | None = None
    live: LiveJobs = field(default_factory=LiveJobs)
    waiting: Waiting = field(default_factory=Waiting)
    # Serialises progress flushes with finalize's write, so a late flush never
    # overwrites a job's final numbers.
    db_lock: threading.Lock = field(default_factory=threading.Lock)
    # Called with the backup id once a job ended (its end recorded): the queue's
    # dispatch looks for room at once instead of at its next round.
    on_end: list[Callable[[str], None]] = field(default_factory=list)

    def session(self) -> contextlib.AbstractContextManager[Session]:
        return session_scope(self.settings.db_url)

    def node(self, ref: NodeRef) -> NodeClient:
        return NodeClient(ref, self.token)

    def node_of(self, backup_id: str) -> NodeRef | None:
        with self.session() as s:
            row = s.get(BackupJob, backup_id)
            return node_ref(s, row.node_id) if row else None

    def views(self, s: Session, rows: Sequence[BackupJob]) -> list[Job]:
        links = job_links(s, rows)
        with self.live.lock:  # not while a line is being applied
            views = [job_view(row, self.live.get(row.id), links[row.id]) for row in rows]
        for view in views:
            if view.status == JobStatus.QUEUED:
                view.waiting_reason = self.waiting.get(view.backup_id)
        return views

    def job(self, backup_id: str) -> Job:
        with self.session() as s:
            row = s.get(BackupJob, backup_id)
            if row is None:
                raise NotFound(f"backup {backup_id} does not exist")
            return self.views(s, [row])[0]

    def ended(self, backup_id: str) -> None:
        """Tell whoever waits for jobs to end (``on_end``); their failure is logged only."""
        for call in self.on_end:
            try:
                call(backup_id)
            except Exception:
                log.exception("after the end of backup %s", backup_id)

    def publish_job(self, backup_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.bus.publish(self.job(backup_id))

    def stop_export(self, name: str) -> None:
        try:
            self.exports.stop(name)
        except ExportError as exc:
            log.warning("stopping export %s: %s", name, exc)
