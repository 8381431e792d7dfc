"""A policy run: its VMs resolved when it starts, one queued job each, and its end.

A run is ``running`` from the moment it is recorded. ``start`` resolves the policy's
paths as the policy is then (an edit later changes the next run, not this one), gives
each VM without a context one (as ``POST /vms`` does), and queues one job per VM
through the dispatcher; a VM that has a job queued or running already is recorded in
the run's ``skipped`` with the reason. A run whose resolution fails (a vCenter that
cannot be read, an include path gone, nothing selected) ends ``failed`` with that line.

``end_finished`` (each scheduler tick) ends the runs whose every job ended:
``completed`` when every VM's backup completed, ``cancelled`` when every job was
cancelled, ``failed`` otherwise. Then retention runs for the policy and the
notification goes out (on anything but success always, on success when asked); a
failure of either is recorded in the run (``retention`` lines, ``notify_error``) and
never changes the run's status.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from engine import clock
from engine.config import Settings
from engine.contract.hub import BackupRequest, Job
from engine.contract.policy import PolicyRun, PolicyRunVM
from engine.contract.status import JobStatus, PolicyRunStatus, RunTrigger
from engine.db.models import BackupJob, BackupPolicy, VMReplicationContext
from engine.db.models import PolicyRun as RunRow
from engine.db.session import session_scope
from engine.errors import SendenseError
from engine.hub.policies import store
from engine.hub.policies.notify import Notifier
from engine.hub.policies.resolve import Inventories, Taken, checked, read_inventories, resolve
from engine.hub.policies.retention import RetentionService
from engine.hub.policies.store import PolicyStore
from engine.hub.queue.dispatcher import Dispatcher
from engine.vcenter.contexts import find_context, upsert_context

log = logging.getLogger("sendense.hub.policies")

# A run with neither jobs nor skipped VMs this long after its start was left by a hub
# that stopped between recording it and queueing its VMs.
ORPHAN_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class Skipped:
    """A VM a run could not queue, and why (the run's ``skipped`` JSON)."""

    vm_name: str
    vm_path: str
    vcenter_host: str | None
    error: str

    @classmethod
    def of(cls, taken: Taken, error: str) -> Skipped:
        return cls(taken.vm.name, taken.vm.path, taken.source.vcenter_host, error)


def outcome(jobs: Sequence[JobStatus], skipped: int) -> PolicyRunStatus | None:
    """How a run ended, from its jobs' statuses; None while any job goes on."""
    if any(not status.finished for status in jobs):
        return None
    if jobs and not skipped and all(s == JobStatus.COMPLETED for s in jobs):
        return PolicyRunStatus.COMPLETED
    if jobs and not skipped and all(s == JobStatus.CANCELLED for s in jobs):
        return PolicyRunStatus.CANCELLED
    return PolicyRunStatus.FAILED


def _duration(job: Job, now: datetime) -> float | None:
    if job.started_at is None:
        return None
    end = job.completed_at.replace(tzinfo=None) if job.completed_at else now
    return max(0.0, (end - job.started_at.replace(tzinfo=None)).total_seconds())


class PolicyRuns:
    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        retention: RetentionService,
        notifier: Notifier,
        policies: PolicyStore,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.retention = retention
        self.notifier = notifier
        self.policies = policies
        # Runs being started in this process: not ended (they have no jobs yet).
        self._starting: set[int] = set()
        self._lock = threading.Lock()

    # ---- recording -------------------------------------------------------------------

    @staticmethod
    def record(
        s: Session,
        policy: BackupPolicy,
        trigger: RunTrigger,
        scheduled_for: datetime | None = None,
        *,
        missed: str | None = None,
    ) -> RunRow:
        """A new run row in the caller's transaction (a missed one ends at once)."""
        now = clock.utcnow()
        row = RunRow(
            policy_id=policy.id,
            trigger=trigger.value,
            scheduled_for=scheduled_for,
            status=PolicyRunStatus.MISSED if missed else PolicyRunStatus.RUNNING,
            error=missed,
            started_at=now,
            finished_at=now if missed else None,
        )
        s.add(row)
        s.flush()
        return row

    # ---- starting --------------------------------------------------------------------

    @contextmanager
    def _started(self, run_id: int) -> Iterator[None]:
        with self._lock:
            self._starting.add(run_id)
        try:
            yield
        finally:
            with self._lock:
                self._starting.discard(run_id)

    def start(self, run_id: int, inventories: Inventories | None = None) -> None:
        """Resolve the run's VMs now and queue them; a resolution that fails fails the run."""
        with self._started(run_id):
            try:
                self._queue(run_id, inventories)
            except SendenseError as exc:
                self._end(run_id, PolicyRunStatus.FAILED, str(exc), retention=False)
                return
        self.end_if_finished(run_id)

    def _queue(self, run_id: int, inventories: Inventories | None) -> None:
        with session_scope(self.settings.db_url) as s:
            run = s.get(RunRow, run_id)
            policy = s.get(BackupPolicy, run.policy_id) if run else None
            if run is None or policy is None:
                return
            include, exclude = store.includes(policy), store.excludes(policy)
            repository_id, backup_type = policy.repository_id, store.backup_type(policy)
        read = inventories or read_inventories(self.settings)
        found = checked(read, resolve(read.sources, include, exclude), excludes_too=False)
        requests: list[BackupRequest] = []
        by_context: dict[str, Taken] = {}
        skipped: list[Skipped] = []
        with session_scope(self.settings.db_url) as s:
            for taken in found.vms:
                host = taken.source.vcenter_host
                ctx = find_context(s, host, taken.vm) or upsert_context(
                    s, taken.vm, credential_id=taken.source.credential_id, vcenter_host=host
                )
                try:
                    request = BackupRequest(
                        vm_context_id=ctx.context_id,
                        repository_id=repository_id,
                        backup_type=backup_type,
                    )
                except ValidationError as exc:
                    skipped.append(
                        Skipped.of(taken, f"cannot be asked for: {exc.errors()[0]['msg']}")
                    )
                    continue
                requests.append(request)
                by_context[ctx.context_id] = taken
        enqueued = self.dispatcher.enqueue(requests, policy_run_id=run_id, skip_busy=True)
        for request, reason in enqueued.skipped:
            skipped.append(Skipped.of(by_context[request.vm_context_id or ""], reason))
        if skipped:
            with session_scope(self.settings.db_url) as s:
                row = s.get(RunRow, run_id)
                if row is not None:
                    row.skipped = json.dumps([vars(x) for x in skipped])

    # ---- ending ----------------------------------------------------------------------

    def end_finished(self) -> None:
        """End every running run whose jobs all ended (the scheduler's tick)."""
        with session_scope(self.settings.db_url) as s:
            ids = list(s.scalars(select(RunRow.id).where(RunRow.status == PolicyRunStatus.RUNNING)))
        for run_id in ids:
            self.end_if_finished(run_id)

    def end_if_finished(self, run_id: int) -> None:
        with self._lock:
            if run_id in self._starting:
                return
        with session_scope(self.settings.db_url) as s:
            run = s.get(RunRow, run_id)
            if run is None or run.status != PolicyRunStatus.RUNNING:
                return
            statuses = [
                JobStatus(st)
                for st in s.scalars(
                    select(BackupJob.status).where(BackupJob.policy_run_id == run_id)
                )
            ]
            skipped = len(json.loads(run.skipped or "[]"))
            started_at = run.started_at
        if not statuses and not skipped:
            if clock.utcnow() - started_at >= ORPHAN_AFTER:
                self._end(
                    run_id,
                    PolicyRunStatus.FAILED,
                    "the hub stopped before the run's VMs were queued",
                    retention=False,
                )
            return
        status = outcome(statuses, skipped)
        if status is None:
            return
        failed = sum(st != JobStatus.COMPLETED for st in statuses) + skipped
        error = None
        if status == PolicyRunStatus.FAILED:
            error = f"{failed} of {len(statuses) + skipped} VMs were not backed up"
        self._end(run_id, status, error, retention=True)

    def _end(
        self, run_id: int, status: PolicyRunStatus, error: str | None, *, retention: bool
    ) -> None:
        """Record the end (once: a concurrent end loses the race and does nothing), then
        retention when the run queued backups, then the notification."""
        with session_scope(self.settings.db_url) as s:
            won = s.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == PolicyRunStatus.RUNNING)
                .values(status=status.value, error=error, finished_at=clock.utcnow())
            )
            if not getattr(won, "rowcount", 0):
                return
        self.conclude(run_id, retention=retention)

    def conclude(self, run_id: int, *, retention: bool) -> None:
        """What follows a run's end: retention (when it backed anything up), then the
        notification. Neither's failure changes the run's status: each is recorded."""
        with session_scope(self.settings.db_url) as s:
            run = s.get(RunRow, run_id)
            if run is None:
                return
            policy_id = run.policy_id
        if retention:
            try:
                lines = self.retention.apply(policy_id)
            except SendenseError as exc:
                lines = [f"retention failed: {exc}"]
            except Exception:
                log.exception("retention after policy run %s", run_id)
                lines = ["retention failed: internal error (see the hub log)"]
            with session_scope(self.settings.db_url) as s:
                row = s.get(RunRow, run_id)
                if row is not None:
                    row.retention = json.dumps(lines)
        self._notify(run_id)

    def _notify(self, run_id: int) -> None:
        with session_scope(self.settings.db_url) as s:
            run = s.get(RunRow, run_id)
            policy = s.get(BackupPolicy, run.policy_id) if run else None
            if run is None or policy is None:
                return
            success = run.status == PolicyRunStatus.COMPLETED
            if success and not policy.notify_on_success:
                return
            urls = self.policies.notify_urls(policy)
            if not urls:
                return
            view = self.view(s, run)
        try:
            problem = self.notifier.send(urls, view)
        except Exception:
            log.exception("notification of policy run %s", run_id)
            problem = "the notification failed: internal error (see the hub log)"
        if problem:
            with session_scope(self.settings.db_url) as s:
                row = s.get(RunRow, run_id)
                if row is not None:
                    row.notify_error = problem

    # ---- views -----------------------------------------------------------------------

    def view(self, s: Session, run: RunRow) -> PolicyRun:
        """The run with each VM: its job's outcome, place in the queue, bytes, duration
        and error; the VMs it could not queue with why."""
        policy_name = s.scalar(select(BackupPolicy.name).where(BackupPolicy.id == run.policy_id))
        rows = list(
            s.scalars(
                select(BackupJob)
                .where(BackupJob.policy_run_id == run.id)
                .order_by(BackupJob.queue_order, BackupJob.id)
            )
        )
        contexts = (
            {
                c.context_id: c
                for c in s.scalars(
                    select(VMReplicationContext).where(
                        VMReplicationContext.context_id.in_({r.vm_context_id for r in rows})
                    )
                )
            }
            if rows
            else {}
        )
        now = clock.utcnow()
        vms = []
        for job in self.dispatcher.jobs.ctx.views(s, rows):
            ctx = contexts.get(job.vm_context_id)
            vms.append(
                PolicyRunVM(
                    vm_name=job.vm_name,
                    vm_path=ctx.vm_path if ctx else "",
                    vcenter_host=ctx.vcenter_host if ctx else None,
                    backup_id=job.backup_id,
                    status=job.status,
                    queue_position=job.queue_position,
                    backup_type=job.backup_type,
                    bytes_transferred=job.bytes_done,
                    duration_seconds=_duration(job, now),
                    error=job.error_message,
                )
            )
        vms += [PolicyRunVM(**entry) for entry in json.loads(run.skipped or "[]")]
        return PolicyRun(
            id=run.id,
            policy_id=run.policy_id,
            policy_name=policy_name or "",
            trigger=RunTrigger(run.trigger),
            scheduled_for=run.scheduled_for,
            started_at=run.started_at,
            finished_at=run.finished_at,
            status=PolicyRunStatus(run.status),
            error=run.error,
            vms=vms,
            retention=json.loads(run.retention or "[]"),
            notify_error=run.notify_error,
        )
