"""``PolicyService``: the one object the policy routes and the scheduler round call.

Its methods are synchronous (database, vCenter) and run in worker threads. It joins the
store (policies), the runs and the scheduler; the VMs of a policy are always resolved
from every registered vCenter's inventory read now.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import clock
from engine.config import Settings
from engine.contract.policy import (
    Policy,
    PolicyEdit,
    PolicyIn,
    PolicyPreview,
    PolicyRun,
    PolicyVM,
)
from engine.contract.status import RunTrigger
from engine.db.models import BackupPolicy
from engine.db.models import PolicyRun as RunRow
from engine.db.session import session_scope
from engine.errors import NotFound, SendenseError
from engine.hub.policies import store
from engine.hub.policies.notify import Notifier
from engine.hub.policies.resolve import Resolution, Taken, checked, read_inventories, resolve
from engine.hub.policies.retention import RetentionService
from engine.hub.policies.runs import PolicyRuns
from engine.hub.policies.scheduler import Scheduler, anchor_of, next_run
from engine.hub.policies.store import PolicyStore
from engine.hub.queue.dispatcher import Dispatcher
from engine.vcenter.contexts import find_context


class PolicyService:
    def __init__(
        self,
        settings: Settings,
        dispatcher: Dispatcher,
        retention: RetentionService,
        notifier: Notifier,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.retention = retention
        self.notifier = notifier
        self.store = PolicyStore(settings.key_path, self._select)
        self.runner = PolicyRuns(settings, dispatcher, retention, notifier, self.store)
        self.scheduler = Scheduler(settings, self.runner)

    def _session(self) -> AbstractContextManager[Session]:
        return session_scope(self.settings.db_url)

    def _resolve(
        self, include: Sequence[str], exclude: Sequence[str], *, stored: bool
    ) -> Resolution:
        """The paths resolved now. A policy being stored must name only paths that exist
        and select a VM; a stored policy's preview may select none (and its excludes may
        have gone with their VMs)."""
        read = read_inventories(self.settings)
        found = resolve(read.sources, include, exclude)
        return checked(read, found, excludes_too=not stored, empty_ok=stored)

    def _select(self, include: Sequence[str], exclude: Sequence[str]) -> Resolution:
        return self._resolve(include, exclude, stored=False)

    # ---- policies --------------------------------------------------------------------

    def _view(self, s: Session, row: BackupPolicy) -> Policy:
        now = clock.utcnow()
        upcoming = None
        if row.enabled:
            try:
                upcoming = next_run(
                    store.schedule(row), anchor_of(row), now, self.settings.scheduler.grace_seconds
                )
            except SendenseError:  # a zone gone from the tz database since: it never runs
                upcoming = None
        last = s.scalar(
            select(RunRow).where(RunRow.policy_id == row.id).order_by(RunRow.id.desc()).limit(1)
        )
        return Policy(
            id=row.id,
            name=row.name,
            repository_id=row.repository_id,
            schedule=row.schedule,
            timezone=row.timezone,
            include=store.includes(row),
            exclude=store.excludes(row),
            backup_type=store.backup_type(row),
            retention=store.retention(row),
            notify=self.store.shown_urls(row),
            notify_on_success=row.notify_on_success,
            enabled=row.enabled,
            next_run_at=upcoming,
            last_run=self.runner.view(s, last) if last is not None else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def add(self, request: PolicyIn) -> Policy:
        with self._session() as s:
            return self._view(s, self.store.add(s, request, clock.utcnow()))

    def edit(self, name: str, request: PolicyEdit) -> Policy:
        """The fields given change; the running run (if any) keeps its VMs."""
        with self._session() as s:
            return self._view(s, self.store.edit(s, name, request, clock.utcnow()))

    def get(self, name: str) -> Policy:
        with self._session() as s:
            return self._view(s, store.row_of(s, name))

    def all(self) -> list[Policy]:
        with self._session() as s:
            rows = s.scalars(select(BackupPolicy).order_by(BackupPolicy.name))
            return [self._view(s, row) for row in rows]

    def delete(self, name: str) -> None:
        """The policy and its runs go; jobs it queued go on, as if asked for by hand."""
        with self._session() as s:
            s.delete(store.row_of(s, name))

    def set_enabled(self, name: str, enabled: bool) -> Policy:
        with self._session() as s:
            return self._view(s, self.store.set_enabled(s, name, enabled, clock.utcnow()))

    def preview(self, name: str) -> PolicyPreview:
        """The policy's VMs resolved now, each with the path that decided it."""
        with self._session() as s:
            row = store.row_of(s, name)
            include, exclude = store.includes(row), store.excludes(row)
        found = self._resolve(include, exclude, stored=True)
        with self._session() as s:

            def shown(taken: Taken) -> PolicyVM:
                ctx = find_context(s, taken.source.vcenter_host, taken.vm)
                return PolicyVM(
                    vm_name=taken.vm.name,
                    vm_path=taken.vm.path,
                    vcenter_host=taken.source.vcenter_host,
                    matched_by=taken.matched_by,
                    context_id=ctx.context_id if ctx else None,
                )

            return PolicyPreview(
                policy=name,
                vms=[shown(t) for t in found.vms],
                excluded=[shown(t) for t in found.excluded],
            )

    # ---- runs ------------------------------------------------------------------------

    def run(self, name: str) -> PolicyRun:
        """``policy run``: resolve and queue now (a manual run)."""
        with self._session() as s:
            run_id = self.runner.record(s, store.row_of(s, name), RunTrigger.MANUAL).id
        self.runner.start(run_id)
        return self.run_view(run_id)

    def runs(self, name: str, limit: int = 20) -> list[PolicyRun]:
        with self._session() as s:
            policy = store.row_of(s, name)
            rows = s.scalars(
                select(RunRow)
                .where(RunRow.policy_id == policy.id)
                .order_by(RunRow.id.desc())
                .limit(limit)
            )
            return [self.runner.view(s, row) for row in rows]

    def run_view(self, run_id: int) -> PolicyRun:
        with self._session() as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise NotFound(f"policy run {run_id} does not exist")
            return self.runner.view(s, row)

    def tick(self) -> None:
        """Both rounds at once: fire due runs (once each), and end running runs whose
        every job ended (retention, then the notification)."""
        self.scheduler.tick()

    def fire(self) -> None:
        """The scheduler round: fire due runs, once each."""
        self.scheduler.fire()

    def finish(self) -> None:
        """The runs' round: end the runs whose every job ended (retention, then the
        notification), apart from the scheduler so a long merge delays no start."""
        self.scheduler.runs.end_finished()
