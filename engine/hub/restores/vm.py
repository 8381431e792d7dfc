"""The VM restore job: a point's VM made again in vCenter, its disks written by a node.

Start: the plan's checks (``vm_plan``) answer in one line; then the pending row goes in
and a thread of the job's own creates the VM with ``CreateVM_Task``, exports each disk of
the point read-only, and hands the node a ``RestoreStartRequest``. Follow: the node's
lines are read by ``JobState`` (the backups' own reading of them) and mirrored into the
``RestoreStore``; the backups' watch round runs over them too (a dead export, a node
that fell silent or forgot the job). End: completed only when every disk reported
``disk_done``, the client said ``done completed`` and exited 0; then the exports stop, an
``overwrite`` replaces the original (only now), and the VM is powered on if asked. On any
failure or cancel the exports stop and the VM the job created is removed, or, when that
fails, named in the job's error: never a silent half VM.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from engine import vcenter
from engine.config import Settings
from engine.contract.fields import url_safe
from engine.contract.node import RestoreStartRequest
from engine.contract.progress import ProgressLine
from engine.contract.restore import RestoreJob, VMRestoreRequest
from engine.contract.status import DiskStatus, JobStatus, RestoreKind
from engine.contract.targets import NbdTarget, NbdTargets, uri_host
from engine.db.models import RestoreDisk
from engine.db.models import RestoreJob as RestoreRow
from engine.errors import Cancelled, Conflict, SendenseError, VCenterError
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportManager
from engine.hub.jobs import following
from engine.hub.jobs.ending import dead_export
from engine.hub.jobs.live import JobContext, log
from engine.hub.nodes import NodeRef, mark_seen, node_ref
from engine.hub.progress import DiskState, JobState
from engine.hub.restores.store import LiveRestore, RestoreStore
from engine.hub.restores.vm_plan import VMPlan, make_plan
from engine.hub.restores.vm_restart import reconcile_vm_restores
from engine.vcenter.stored import connect_stored


class RestoreContext(JobContext):
    """The backups' job context, for VM restores: running restores in its ``live``, and
    the node of a restore's row."""

    def node_of(self, backup_id: str) -> NodeRef | None:
        with self.session() as s:
            row = s.get(RestoreRow, backup_id)
            return node_ref(s, row.node_id) if row else None


@dataclass
class Run:
    """A VM restore in this hub: its plan, and what it made that its end must undo."""

    restore_id: str
    plan: VMPlan
    live: LiveRestore
    created: vcenter.CreatedVM | None = None
    exports: list[str] = field(default_factory=list)
    # Set once a failure may no longer remove the VM: the original is gone (overwrite),
    # or the VM is whole and only its power-on failed.
    keep_vm: bool = False


def export_name(restore_id: str, source_key: int) -> str:
    return url_safe(f"{restore_id}-disk{source_key}")


class VMRestores:
    def __init__(
        self,
        settings: Settings,
        exports: ExportManager,
        bus: EventBus,
        token: str,
        store: RestoreStore,
    ) -> None:
        self.ctx = RestoreContext(settings, exports, bus, token)
        self.store = store
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}

    # -- start ----------------------------------------------------------------------------

    def start(self, request: VMRestoreRequest) -> RestoreJob:
        """Check, record the pending job and answer; the VM is made in the background."""
        with self.ctx.session() as s:
            plan, vc = make_plan(s, self.ctx.settings, request)
        try:
            with self._lock:
                names = {r.plan.name for r in self._runs.values()}
                names |= {r.plan.final_name for r in self._runs.values()}
                if {plan.name, plan.final_name} & names:
                    raise Conflict(f"a restore into VM {plan.final_name} is already running")
                with self.ctx.session() as s:
                    restore_id = self.store.new_id(s, plan.vm_name)
                    live = self.store.add(s, _pending_row(restore_id, plan))
                run = Run(restore_id, plan, live)
                self._runs[restore_id] = run
        except BaseException:
            vc.close()
            raise
        live.canceller = functools.partial(self._cancel, restore_id)
        log.info("restore %s: %s as VM %s", restore_id, plan.point_id, plan.path)
        threading.Thread(
            target=self._setup, args=(run, vc), name=f"setup-{restore_id}", daemon=True
        ).start()
        return self.store.view(restore_id)

    def _setup(self, run: Run, vc: vcenter.VCenter) -> None:
        """Make the VM (the point's exports start meanwhile), start the node; any failure
        ends the job."""
        plan = run.plan
        run.exports = [export_name(run.restore_id, d.key) for d in plan.disks]
        try:
            with ThreadPoolExecutor(len(plan.disks) + 1) as pool:
                exporting = [
                    pool.submit(self.ctx.exports.start, name, Path(d.qcow2_path), read_only=True)
                    for name, d in zip(run.exports, plan.disks, strict=True)
                ]
                with vc:
                    self._check_cancel(run)
                    run.created = vcenter.create_vm(
                        vc,
                        plan.config,
                        plan.name,
                        plan.placement,
                        keep_mac=plan.original is not None,
                    )
                for future in exporting:
                    future.result()  # the first failure, in disk order
            self.store.running(run.restore_id, vm_moref=run.created.moref, vm_path=run.created.path)
            self._check_cancel(run)
            state = self._place(run, run.created)
            self.ctx.live.register(state)
            self.ctx.node(plan.node).start_restore(self._node_request(run, state))
            with self.ctx.session() as s:
                mark_seen(s, plan.node.id)
            if run.live.cancel_requested.is_set():  # asked while the node was being told
                self._cancel(run.restore_id)
        except Exception as exc:
            self.ctx.live.forget(run.restore_id)
            cancelled = isinstance(exc, Cancelled)
            if not isinstance(exc, SendenseError):
                log.exception("restore %s: setting up failed", run.restore_id)
            self._end(
                run,
                JobStatus.CANCELLED if cancelled else JobStatus.FAILED,
                "cancelled by request" if cancelled else str(exc) or type(exc).__name__,
            )

    @staticmethod
    def _check_cancel(run: Run) -> None:
        if run.live.cancel_requested.is_set():
            raise Cancelled("cancelled by request")

    def _place(self, run: Run, created: vcenter.CreatedVM) -> JobState:
        """Each export of a point disk paired with the new VM's disk it fills, in the
        store and in the state that follows the node's lines."""
        by_source = {d.key: (d, name) for d, name in zip(run.plan.disks, run.exports, strict=True)}
        places: dict[int, tuple[int, str, str]] = {}
        disks: dict[int, DiskState] = {}
        for new in created.disks:
            source, name = by_source[new.source_key]
            places[source.key] = (new.key, new.file_name, name)
            disks[new.key] = DiskState(
                disk_key=new.key,
                export_name=name,
                qcow2_path=source.qcow2_path,
                bytes_total=source.capacity_bytes,
            )
        self.store.place_disks(run.restore_id, places)
        return JobState(backup_id=run.restore_id, context_id=run.plan.context_id, disks=disks)

    def _node_request(self, run: Run, state: JobState) -> RestoreStartRequest:
        assert run.created is not None
        host = uri_host(self.ctx.settings.nbd.bind)  # where the exports listen
        sources = []
        for key, disk in state.disks.items():
            export = self.ctx.exports.get(disk.export_name)
            if export is None:
                raise SendenseError(f"disk {key}: export {disk.export_name} is not running")
            sources.append(NbdTarget(disk_key=key, host=host, port=export.port, export=export.name))
        creds = run.plan.credentials
        return RestoreStartRequest(
            job_id=run.restore_id,
            vm_name=run.created.name,
            vm_path=run.created.path,
            vcenter_host=creds.vcenter_host,
            vcenter_user=creds.username,
            vcenter_password=SecretStr(creds.password),
            vcenter_thumbprint=creds.thumbprint,
            nbd_host=host,
            nbd_sources=NbdTargets(targets=tuple(sources)),
            max_rate_mib=run.plan.request.max_rate_mib,
        )

    # -- follow ---------------------------------------------------------------------------

    def ingest(self, restore_id: str, lines: list[ProgressLine]) -> None:
        """A node's report; lines for a restore that ended (or is not the node's yet) are
        taken and ignored."""
        state = self.ctx.live.get(restore_id)
        if state is None:
            self.store.view(restore_id)  # NotFound for an unknown restore
            return
        with self.ctx.live.lock:
            changed = False
            for line in lines:
                changed |= state.apply(line)
            moved = [d.model_copy() for d in state.take_db()]
        for d in moved:
            self.store.update_disk(
                restore_id,
                d.disk_key,
                status=d.status,
                bytes_done=d.bytes_done,
                bytes_total=d.bytes_total,
                bytes_zero=d.bytes_zero,
                rate_bps=d.rate_bps,
                error=d.error,
            )
        if changed:
            self.store.touch(restore_id)
        if state.exited and self.ctx.live.begin_end(state):
            threading.Thread(
                target=self._finalize, args=(state,), name=f"end-{restore_id}", daemon=True
            ).start()

    def watch(self) -> None:
        """The backups' watch round over the running restores: a dead export, a silent
        node, a node that no longer knows the job, a late exit report."""
        following.watch(self.ctx, self._end_now)

    def _end_now(self, ctx: JobContext, state: JobState) -> None:
        if ctx.live.begin_end(state):
            self._finalize(state)

    def _cancel(self, restore_id: str) -> None:
        """Stop the node's client (it then reports a cancelled end); before the node has
        the job, the setup thread sees the request between its steps."""
        state = self.ctx.live.get(restore_id)
        run = self._runs.get(restore_id)
        if state is None or run is None:
            return
        state.cancel_requested = True
        self.ctx.node(run.plan.node).cancel(restore_id)

    # -- end ------------------------------------------------------------------------------

    def _finalize(self, state: JobState) -> None:
        """End a restore whose client exited, or that the hub gave up on."""
        run = self._runs.get(state.backup_id)
        if run is None:
            return
        with self.ctx.live.lock:
            status, reason = state.outcome()
        if status == JobStatus.FAILED and state.failure is None:
            # The client may see a dead export (its reads fail) before the watch does:
            # the operator reads qemu-nbd's own words.
            reason = dead_export(self.ctx, state) or reason
        try:
            self._end(run, status, reason)
        finally:
            self.ctx.live.forget(state.backup_id)

    def _end(self, run: Run, status: JobStatus, reason: str | None) -> None:
        if run.exports:
            with ThreadPoolExecutor(len(run.exports)) as pool:
                list(pool.map(self.ctx.stop_export, run.exports))
        if status == JobStatus.COMPLETED:
            for key in run.live.disks:
                self.store.update_disk(run.restore_id, key, status=DiskStatus.COMPLETED)
            self.store.flush()  # whole disks on record: a restart never removes this VM
            try:
                self._complete(run)
            except SendenseError as exc:
                status, reason = JobStatus.FAILED, str(exc)
        if status != JobStatus.COMPLETED and run.created is not None and not run.keep_vm:
            problem = self._remove_vm(run.plan, run.created)
            if problem is not None:
                reason = f"{reason}; {problem}"
        with self._lock:
            self._runs.pop(run.restore_id, None)
        self.store.finish(run.restore_id, status, reason)

    def _complete(self, run: Run) -> None:
        """The disks are whole: replace the original (overwrite), power on (if asked)."""
        plan, created = run.plan, run.created
        assert created is not None
        if plan.original is None and not plan.request.power_on:
            return
        with self.ctx.session() as s:
            vc = connect_stored(s, self.ctx.settings.key_path, plan.credential_id)
        with vc:
            if plan.original is not None:
                try:
                    vcenter.destroy_vm(vc, plan.original.moref)  # powered off first
                except SendenseError as exc:
                    raise VCenterError(
                        f"the original VM {plan.original.path} could not be removed, so it "
                        f"stays and its restored copy goes: {exc}"
                    ) from None
                run.keep_vm = True  # the original is gone: its copy must stay
                try:
                    vcenter.rename_vm(vc, created.moref, plan.final_name)
                except SendenseError as exc:
                    raise VCenterError(
                        f"the original VM {plan.original.path} was replaced, but the restored "
                        f"VM keeps its temporary name {created.path}: {exc}"
                    ) from None
                self.store.running(run.restore_id, vm_path=plan.original.path)
            if plan.request.power_on:
                run.keep_vm = True  # whole: a failed power-on leaves no half VM
                try:
                    vcenter.power_on(vc, created.moref)
                except SendenseError as exc:
                    path = plan.original.path if plan.original else created.path
                    raise VCenterError(
                        f"VM {path} is restored but could not be powered on: {exc}"
                    ) from None

    def _remove_vm(self, plan: VMPlan, created: vcenter.CreatedVM) -> str | None:
        """Remove the VM this job created; None when it is gone, else what to tell."""
        try:
            with self.ctx.session() as s:
                vc = connect_stored(s, self.ctx.settings.key_path, plan.credential_id)
            with vc:
                vcenter.destroy_vm(vc, created.moref)
        except SendenseError as exc:
            log.error("restore: VM %s (%s) is left behind: %s", created.path, created.moref, exc)
            return f"the VM {created.path} it created could not be removed: {exc}"
        return None

    # -- restart --------------------------------------------------------------------------

    def reconcile(self) -> list[str]:
        """After a hub restart: every VM restore left active is failed and cleaned."""
        return reconcile_vm_restores(self.ctx, self.store)


def _pending_row(restore_id: str, plan: VMPlan) -> RestoreRow:
    """The job as it starts: its disks under the point's keys until the VM exists, and
    the path it is being created at (what a restart looks for if the hub dies while
    vCenter makes it)."""
    return RestoreRow(
        id=restore_id,
        kind=RestoreKind.VM,
        backup_job_id=plan.point_id,
        vm_name=plan.vm_name,
        target=plan.final_name,
        node_id=plan.node.id,
        status=JobStatus.PENDING,
        request=plan.request.model_dump_json(),
        vm_path=plan.path,
        total_bytes=sum(d.capacity_bytes for d in plan.disks),
        disks=[
            RestoreDisk(
                disk_key=d.key,
                source_disk_key=d.key,
                source_path=d.qcow2_path,
                bytes_total=d.capacity_bytes,
                status=DiskStatus.QEMU_STARTED,
            )
            for d in plan.disks
        ],
    )
