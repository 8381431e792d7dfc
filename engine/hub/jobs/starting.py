"""Starting a backup: the plan's qcow2 files and exports, then the node's client.

An incremental disk's qcow2 is an overlay on its parent's (``-F qcow2``, a relative
backing path), and its digest table starts as the parent's (``derive``): the client
sends digests only of the chunks it copies.

The promise: ``start`` either answers with every export running and the node holding
the job, or leaves nothing behind (exports stopped, new qcow2 files deleted, rows
deleted) before its error goes out. A job from the queue (``start_queued``) keeps its
row: back in the queue, at its place, when its node could not be reached (the dispatch
gives it to another node), else failed with the reason; its disks' rows go either way.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import select

from engine.contract.hub import BackupPreview, BackupRequest, BackupStarted, DiskResult
from engine.contract.node import StartRequest
from engine.contract.status import DiskStatus, JobStatus
from engine.contract.targets import NbdTarget, NbdTargets, uri_host
from engine.db.models import BackupDisk, BackupJob, VMReplicationContext, utcnow
from engine.errors import Conflict, NotFound, SendenseError
from engine.hub.jobs.ending import remove_restore_point
from engine.hub.jobs.live import JobContext, log
from engine.hub.jobs.plan import JobPlan, find_context, make_plan, preview, refresh_for_chain
from engine.hub.nodes import NodeRef, NodeUnreachable, mark_seen, pick_node
from engine.hub.progress import DiskState, JobState
from engine.hub.queue import store as queue
from engine.hub.verify.table import TableWriter, derive, table_path


def preview_job(ctx: JobContext, request: BackupRequest) -> BackupPreview:
    """``POST /backups/preview``: the start's own decision, nothing started."""
    with ctx.session() as s:
        return preview(s, ctx.settings, find_context(s, request), request)


def start_job(ctx: JobContext, request: BackupRequest) -> BackupStarted:
    """``POST /backups``: at once, on the least loaded node that serves the VM's vCenter
    (the first enabled node when the hub has no node watch)."""
    with ctx.session() as s:
        vm = find_context(s, request)
        refresh_for_chain(s, ctx.settings, vm, request)
        context_id, vm_name, vcenter = vm.context_id, vm.vm_name, vm.vcenter_host
    fleet = ctx.fleet
    with ctx.live.claim(context_id, vm_name):
        with ctx.session() as s:  # read again: the plan's rows go in this session

            def pick() -> NodeRef:
                return fleet.pick(vcenter) if fleet is not None else pick_node(s)

            plan = make_plan(s, ctx.settings, find_context(s, request), request, pick)
        return _run(ctx, plan)


def start_queued(ctx: JobContext, backup_id: str, node: NodeRef) -> BackupStarted:
    """Start a queued job on ``node``: the plan, exports and node start of ``start_job``,
    into the queued row (its id, creation time and place kept). ``Conflict`` and the job
    left queued when its VM is busy (a chain merge) or it is no longer queued (cancelled
    meanwhile); ``NodeUnreachable`` with the job back in the queue; any other error with
    the job failed, nothing else left behind."""
    with ctx.session() as s:
        row = s.get(BackupJob, backup_id)
        if row is None:
            raise NotFound(f"backup {backup_id} does not exist")
        if row.status != JobStatus.QUEUED:
            raise Conflict(f"backup {backup_id} is not queued (status {row.status})")
        context_id, vm_name = row.vm_context_id, row.vm_name
    with ctx.live.claim(context_id, vm_name):
        try:
            plan = _plan_queued(ctx, backup_id, node)
        except BaseException as exc:
            _fail_queued(ctx, backup_id, exc)
            raise
        if plan is None:
            raise Conflict(f"backup {backup_id} is no longer queued")
        return _run(ctx, plan, queued=True)


def _plan_queued(ctx: JobContext, backup_id: str, node: NodeRef) -> JobPlan | None:
    """The queued job's plan, its row made pending on ``node``; None when it left the
    queue in the meantime."""
    with ctx.session() as s:  # vCenter may be asked: no write is held open meanwhile
        row = s.get(BackupJob, backup_id)
        assert row is not None
        request = queue.request_of(row)
        vm = s.get(VMReplicationContext, row.vm_context_id)
        if vm is None:
            raise NotFound(f"the VM context {row.vm_context_id} of {backup_id} is gone")
        refresh_for_chain(s, ctx.settings, vm, request)
    with ctx.session() as s:
        if not queue.take(s, backup_id, node.id):
            return None
        row = s.get(BackupJob, backup_id)
        vm = s.get(VMReplicationContext, request.vm_context_id)
        assert row is not None and vm is not None
        return make_plan(s, ctx.settings, vm, request, lambda: node, queued=row)


def _run(ctx: JobContext, plan: JobPlan, *, queued: bool = False) -> BackupStarted:
    state = JobState(backup_id=plan.backup_id, context_id=plan.vm.context_id, disks={})
    created: list[Path] = []
    try:
        results = []
        for disk in plan.disks:
            disk.qcow2_path.parent.mkdir(parents=True, exist_ok=True)
            parent = disk.chain.parent_qcow2_path
            ctx.exports.create_image(disk.qcow2_path, disk.capacity_bytes, backing=parent)
            created.append(disk.qcow2_path)
            export = ctx.exports.start(disk.export_name, disk.qcow2_path)
            digests = (
                derive(table_path(parent), table_path(disk.qcow2_path))
                if parent is not None
                else TableWriter(table_path(disk.qcow2_path), disk.capacity_bytes)
            )
            state.disks[disk.disk_key] = DiskState(
                disk_key=disk.disk_key,
                export_name=disk.export_name,
                qcow2_path=str(disk.qcow2_path),
                bytes_total=disk.capacity_bytes,
                capacity_bytes=disk.capacity_bytes,
                mode=disk.chain.mode,
                fallback_reason=disk.chain.reason,
                parent_qcow2_path=str(parent) if parent else None,
                digests=digests,
            )
            if disk.chain.reason:
                log.info("backup %s: %s", plan.backup_id, disk.chain.reason)
            results.append(
                DiskResult(
                    disk_id=disk.disk_key,
                    nbd_port=export.port,
                    nbd_export_name=disk.export_name,
                    qcow2_path=str(disk.qcow2_path),
                    qemu_nbd_pid=export.pid,
                )
            )
        host = uri_host(ctx.settings.nbd.bind)  # where the exports listen
        targets = NbdTargets(
            targets=tuple(
                NbdTarget(disk_key=r.disk_id, host=host, port=r.nbd_port, export=r.nbd_export_name)
                for r in results
            )
        )
        _record_exports(ctx, plan.backup_id, results)
        ctx.live.register(state)
        ctx.node(plan.node).start(_start_request(plan, host, targets))
        with ctx.session() as s:
            row = s.get(BackupJob, plan.backup_id)
            assert row is not None
            if row.status == JobStatus.PENDING:  # a client that ended at once is already final
                row.status, row.started_at = JobStatus.RUNNING, utcnow()
            mark_seen(s, plan.node.id)
    except BaseException as exc:
        _undo(ctx, state, created)
        if not queued:
            _delete(ctx, plan.backup_id)
        elif isinstance(exc, NodeUnreachable):
            _requeue(ctx, plan.backup_id)
        else:
            _fail_queued(ctx, plan.backup_id, exc)
        raise
    log.info(
        "backup %s of %s started on node %s: %s",
        plan.backup_id,
        plan.vm.name,
        plan.node.name,
        targets,
    )
    ctx.publish_job(plan.backup_id)
    return BackupStarted(
        backup_id=plan.backup_id,
        vm_context_id=plan.vm.context_id,
        vm_name=plan.vm.name,
        disk_results=results,
        nbd_targets_string=str(targets),
    )


def _record_exports(ctx: JobContext, backup_id: str, results: list[DiskResult]) -> None:
    by_key = {r.disk_id: r for r in results}
    with ctx.session() as s:
        for d in s.scalars(select(BackupDisk).where(BackupDisk.backup_job_id == backup_id)):
            d.nbd_port, d.qemu_nbd_pid = (
                by_key[d.disk_key].nbd_port,
                by_key[d.disk_key].qemu_nbd_pid,
            )
            d.status = DiskStatus.QEMU_STARTED


def _start_request(plan: JobPlan, host: str, targets: NbdTargets) -> StartRequest:
    creds = plan.credentials
    return StartRequest(
        job_id=plan.backup_id,
        vm_name=plan.vm.name,
        vm_path=plan.vm.path,
        vcenter_host=creds.vcenter_host,
        vcenter_user=creds.username,
        vcenter_password=SecretStr(creds.password),
        vcenter_thumbprint=creds.thumbprint,
        nbd_host=host,
        nbd_targets=targets,
        backup_type=plan.chain.backup_type,
        changed_since=plan.chain.changed_since,
        full_reasons=plan.chain.full_reasons,
        max_rate_mib=plan.request.max_rate_mib,
    )


def _undo(ctx: JobContext, state: JobState, created: list[Path]) -> None:
    """Stop the exports, remove the files a failed start made."""
    ctx.live.forget(state.backup_id)
    for disk in state.disks.values():
        ctx.stop_export(disk.export_name)
        if disk.digests is not None:
            disk.digests.close()
    for path in created:
        remove_restore_point(path)


def _delete(ctx: JobContext, backup_id: str) -> None:
    with ctx.session() as s:
        row = s.get(BackupJob, backup_id)
        if row is not None:
            s.delete(row)


def _requeue(ctx: JobContext, backup_id: str) -> None:
    with ctx.session() as s:
        row = s.get(BackupJob, backup_id)
        if row is not None:
            queue.requeue(row)
    log.info("backup %s back in the queue: its node could not be reached", backup_id)


def _fail_queued(ctx: JobContext, backup_id: str, exc: BaseException) -> None:
    """A queued job that could not start ends failed with the reason; its disks' rows
    go (their files were removed or never made)."""
    reason = one_line(exc)
    with ctx.session() as s:
        row = s.get(BackupJob, backup_id)
        if row is None or row.status not in (JobStatus.QUEUED, JobStatus.PENDING):
            return
        row.status, row.error_message, row.completed_at = JobStatus.FAILED, reason, utcnow()
        row.disks = []
    log.error("backup %s could not start: %s", backup_id, reason)
    ctx.publish_job(backup_id)
    ctx.ended(backup_id)


def one_line(exc: BaseException) -> str:
    """An error as the one line a job's reason is: the engine's own message, else the
    exception's kind and first line."""
    text = str(exc).strip().splitlines()
    if isinstance(exc, SendenseError):
        return text[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
