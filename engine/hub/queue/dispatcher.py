"""The hub's dispatch round: the queue read from the database, ``dispatch.assign``'s
decision, and each assigned job started on its node (``JobManager.start_queued``).

A round runs every ``queue.dispatch_seconds``, and at once (``soon``) when jobs are
queued or a job ends. Rounds never overlap: a round asked for while one runs makes that
one look again when it is done, so no freed room waits for the next tick. The starts of
one round run in parallel across nodes and one after the other on each node; a node
that cannot be reached is marked down at its first failed start, and its other jobs of
the round stay queued for the next round to give to another node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.hub import BackupRequest, Job, QueueRequest
from engine.credentials import Credentials
from engine.db.models import VMReplicationContext
from engine.errors import BadInput, Conflict, SendenseError
from engine.hub.fleet import NodeWatch
from engine.hub.jobs import JobManager
from engine.hub.jobs.plan import busy, check_vm, find_contexts, repository, unique_backup_ids
from engine.hub.nodes import NodeRef, NodeUnreachable, node_ref
from engine.hub.queue import store
from engine.hub.queue.dispatch import (
    Assignment,
    Limits,
    Load,
    QueuedJob,
    assign,
    has_room,
    no_room_reason,
    waiting_reason,
)

log = logging.getLogger("sendense.hub.queue")


@dataclass
class Enqueued:
    """What an enqueue did: the jobs queued (in the requests' order), and the requests
    left out with the one-line reason (with ``skip_busy``: a VM with a job queued or
    running already, without a context, a login or disks, or asked for twice)."""

    jobs: list[Job] = field(default_factory=list)
    skipped: list[tuple[BackupRequest, str]] = field(default_factory=list)


@dataclass
class _Checked:
    """The requests that may be queued, each with its VM, and those left out."""

    vms: list[tuple[BackupRequest, VMReplicationContext]] = field(default_factory=list)
    skipped: list[tuple[BackupRequest, str]] = field(default_factory=list)


class Dispatcher:
    def __init__(self, settings: Settings, jobs: JobManager, fleet: NodeWatch) -> None:
        self.settings = settings
        self.jobs = jobs
        self.fleet = fleet
        self._enqueue_lock = threading.Lock()  # one VM's check and row are never split
        self._state = threading.Lock()
        self._busy = False  # a round runs
        self._again = False  # ... and was asked for meanwhile
        jobs.on_job_end(lambda _backup_id: self.soon())

    def queue(self, request: QueueRequest) -> list[Job]:
        """``POST /backups/queue``: all or nothing; a VM queued or running is a 409."""
        return self.enqueue(request.backups).jobs

    def enqueue(
        self,
        requests: Sequence[BackupRequest],
        *,
        policy_run_id: int | None = None,
        skip_busy: bool = False,
    ) -> Enqueued:
        """Queue one job per request (in order), after the checks a start would make
        that hold already: the VM's one context, the repository, the VM's login and
        disks. Without ``skip_busy`` any refusal refuses them all and nothing is queued;
        with it (a policy run) a VM that is refused (a job queued or running already, no
        context, no login or disks, twice in the list) is skipped with the reason, and
        only a repository that does not exist refuses them all."""
        with self._enqueue_lock, self.jobs.ctx.session() as s:
            checked = self._check(s, requests, skip_busy)
            base = time.time_ns()
            ids = unique_backup_ids(s, [vm.vm_name for _, vm in checked.vms])
            rows = [
                store.queued_row(backup_id, vm, request, base + i, policy_run_id)
                for i, (backup_id, (request, vm)) in enumerate(zip(ids, checked.vms, strict=True))
            ]
            s.add_all(rows)
            s.flush()
            jobs = self.jobs.ctx.views(s, rows)
        if jobs:
            log.info("%d backup(s) queued", len(jobs))
            self.soon()
        return Enqueued(jobs, checked.skipped)

    def _check(self, s: Session, requests: Sequence[BackupRequest], skip: bool) -> _Checked:
        """Each request's VM, checked in the request's order (the first refusal is the
        one a refused request names); a few queries for the lot, not a few per VM."""
        checked = _Checked()
        taken = store.open_jobs(s)
        opened: dict[int, Credentials] = {}
        seen: set[str] = set()
        for repository_id in dict.fromkeys(r.repository_id for r in requests):
            repository(s, repository_id)
        for request, vm in zip(requests, find_contexts(s, requests), strict=True):
            try:
                if isinstance(vm, SendenseError):
                    raise vm
                check_vm(s, self.settings, vm, opened)
                if vm.context_id in seen:
                    raise BadInput(f"VM {vm.vm_name} is asked for twice")
                if vm.context_id in taken:
                    raise busy(vm.vm_name, *taken[vm.context_id])
            except SendenseError as exc:
                if not skip:
                    raise
                checked.skipped.append((request, str(exc)))
                continue
            seen.add(vm.context_id)
            checked.vms.append((request, vm))
        return checked

    def soon(self) -> None:
        """A round now, in a thread of its own (or another turn of the one running)."""
        with self._state:
            if self._busy:
                self._again = True
                return
        threading.Thread(target=self._round_logged, name="dispatch", daemon=True).start()

    def _round_logged(self) -> None:
        try:
            self.round()
        except Exception:
            log.exception("dispatch round failed")

    def round(self) -> int:
        """Start what fits now; the number of jobs started (0 when another round runs:
        that one looks again once it is done)."""
        with self._state:
            if self._busy:
                self._again = True
                return 0
            self._busy, self._again = True, False
        started = 0
        try:
            while True:
                started += self._dispatch()
                with self._state:
                    if not self._again:
                        self._busy = False
                        return started
                    self._again = False
        except BaseException:
            with self._state:
                self._busy = False
            raise

    def _dispatch(self) -> int:
        slots = self.fleet.slots()
        limits = Limits.from_settings(self.settings)
        assignments: list[Assignment] = []
        waiting: dict[str, str] = {}
        everyone: str | None = None
        with self.jobs.ctx.session() as s:
            load = Load.of(store.running_jobs(s))
            # The queue is read a chunk at a time, and not at all while nothing fits.
            everyone = no_room_reason(slots, load, limits)
            if everyone is None:
                for n, chunk in enumerate(store.queued_jobs(s)):
                    got = assign(chunk, slots, load, limits)
                    assignments += got
                    if n == 0:  # the head of the queue, where an operator looks
                        taken = {a.job.backup_id for a in got}
                        waiting = {
                            j.backup_id: waiting_reason(j, slots, load, limits)
                            for j in chunk
                            if j.backup_id not in taken
                        }
                    if not has_room(slots, load, limits):
                        break
        self.jobs.ctx.waiting.update(waiting, everyone)
        if not assignments:
            return 0
        by_node: dict[int, list[QueuedJob]] = defaultdict(list)
        for a in assignments:
            by_node[a.node.id].append(a.job)
        with self.jobs.ctx.session() as s:
            refs = [(ref, by_node[ref.id]) for ref in _refs(s, assignments)]
        if not refs:  # the nodes were removed in between: their jobs wait for others
            return 0
        with ThreadPoolExecutor(len(refs), thread_name_prefix="dispatch") as pool:
            return sum(pool.map(lambda pair: self._start_on(*pair), refs))

    def _start_on(self, node: NodeRef, jobs: list[QueuedJob]) -> int:
        """Start the node's jobs of this round one after the other; stop at the first
        sign that the node cannot be reached (its other jobs stay queued)."""
        started = 0
        for job in jobs:
            try:
                self.jobs.start_queued(job.backup_id, node)
            except NodeUnreachable as exc:
                log.warning("backup %s back in the queue: %s", job.backup_id, exc)
                self.fleet.mark_down(node.id, str(exc))
                break
            except Conflict as exc:  # busy VM (a merge) or no longer queued: not now
                log.debug("backup %s not started: %s", job.backup_id, exc)
            except SendenseError:
                pass  # the job failed with the reason (``start_queued`` logged it)
            except Exception:
                log.exception("backup %s failed to start", job.backup_id)
            else:
                started += 1
        return started


def _refs(s: Session, assignments: Sequence[Assignment]) -> list[NodeRef]:
    """The assigned nodes' addresses, each once."""
    refs = []
    for node_id in dict.fromkeys(a.node.id for a in assignments):
        ref = node_ref(s, node_id)
        if ref is not None:
            refs.append(ref)
    return refs
