"""Following a running backup: its node's progress lines, and the hub's own checks.

Lines change only memory; the database gets the latest numbers every few seconds
(``flush_progress``) and subscribers a few disk events a second (``disk_events``). The
watch round, about once a second, fails a job whose qemu-nbd died, asks a node that
fell silent about its job, and ends a job that waits too long for its exit report.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.hub import DiskEvent
from engine.contract.progress import ConfigRecorded, ProgressLine
from engine.contract.status import NodeJobState
from engine.contract.vmconfig import VMConfig
from engine.db.models import BackupDisk, BackupJob
from engine.errors import NotFound, SendenseError
from engine.hub.jobs.ending import dead_export, finalize_now, finalize_soon
from engine.hub.jobs.live import JobContext, log
from engine.hub.progress import DiskState, JobState

# How long a cancelled or faulted job waits for the node's exit report before the hub
# ends it on its own.
EXIT_WAIT_SECONDS = 30.0
# A node silent this long is asked about the job; unreachable this long fails it.
NODE_QUIET_SECONDS = 10.0
NODE_LOST_SECONDS = 120.0

# How the watch ends a job it gives up on: a backup's ``finalize_now``, unless another kind
# of job that a node runs (a VM restore) is watched the same way.
End = Callable[[JobContext, JobState], None]


def ingest(ctx: JobContext, backup_id: str, lines: list[ProgressLine]) -> None:
    """A node's report; lines for a job already ended are taken and ignored."""
    with ctx.live.lock:
        state = ctx.live.get(backup_id)
        changed = False
        if state is not None:
            for line in lines:
                changed |= state.apply(line)
    if state is None:
        with ctx.session() as s:
            if s.get(BackupJob, backup_id) is None:
                raise NotFound(f"backup {backup_id} does not exist")
        return
    configs = [line.config for line in lines if isinstance(line, ConfigRecorded)]
    if configs:
        _record_config(ctx, backup_id, configs[-1])
    if changed:
        ctx.publish_job(backup_id)
    if state.exited:
        finalize_soon(ctx, state)


def _record_config(ctx: JobContext, backup_id: str, config: VMConfig) -> None:
    """The VM's configuration as of the point, kept with it for a whole-VM restore (the
    running job itself has no use for it)."""
    with ctx.session() as s:
        row = s.get(BackupJob, backup_id)
        if row is not None:
            row.vm_config = config.model_dump_json()


def flush_progress(ctx: JobContext) -> None:
    """Write the latest numbers of every running disk; called every few seconds, never
    for a job being finalized."""
    with ctx.db_lock:
        with ctx.live.lock:
            pending = {st.backup_id: st.take_db() for st in ctx.live.states() if not st.finalizing}
        pending = {k: v for k, v in pending.items() if v}
        if not pending:
            return
        with ctx.session() as s:
            for backup_id, disks in pending.items():
                _write_disks(s, backup_id, disks)


def _write_disks(s: Session, backup_id: str, disks: list[DiskState]) -> None:
    rows = {
        d.disk_key: d
        for d in s.scalars(select(BackupDisk).where(BackupDisk.backup_job_id == backup_id))
    }
    for disk in disks:
        row = rows.get(disk.disk_key)
        if row is not None:
            row.status = disk.status
            row.bytes_done, row.bytes_total, row.bytes_zero = (
                disk.bytes_done,
                disk.bytes_total,
                disk.bytes_zero,
            )
    job = s.get(BackupJob, backup_id)
    if job is not None:
        job.bytes_transferred = sum(r.bytes_done for r in rows.values())


def disk_events(ctx: JobContext) -> list[DiskEvent]:
    """Disk events changed since the last call; the caller paces it (a few per second)."""
    with ctx.live.lock:
        return [event for st in ctx.live.states() for event in st.take_sse()]


def watch(ctx: JobContext, end: End = finalize_now) -> None:
    """One round of checks on every running job."""
    now = time.monotonic()
    states = [st for st in ctx.live.states() if not st.finalizing]
    gone = _on_gone_nodes(ctx, states)
    for state in states:
        if state.backup_id in gone and state.failure is None and not state.exited:
            _node_gone(ctx, state, gone[state.backup_id], end)
            continue
        if state.failure is None and not state.exited:
            _check_exports(ctx, state, end)
        if state.failure is not None or state.cancel_requested:
            if now - state.last_event > EXIT_WAIT_SECONDS:
                end(ctx, state)
            continue
        if now - state.last_event > NODE_QUIET_SECONDS:
            _ask_node(ctx, state, now, end)


def _on_gone_nodes(ctx: JobContext, states: list[JobState]) -> dict[str, str]:
    """The jobs (by id) whose node the fleet says is gone, with its reason; one database
    read, and only when some node is gone. Without a fleet (old callers), none: the
    per-job ``NODE_LOST_SECONDS`` alone decides."""
    down = ctx.fleet.down() if ctx.fleet is not None else {}
    if not down or not states:
        return {}
    with ctx.session() as s:
        rows = s.execute(
            select(BackupJob.id, BackupJob.node_id).where(
                BackupJob.id.in_([st.backup_id for st in states]),
                BackupJob.node_id.in_(list(down)),
            )
        )
        return {backup_id: down[node_id] for backup_id, node_id in rows if node_id is not None}


def _node_gone(ctx: JobContext, state: JobState, reason: str, end: End) -> None:
    """End the job now with the fleet's reason: the node is not asked (it does not
    answer, or its tunnel, the way to the hub's exports, is gone); the end stops the
    exports, so a client that still runs there can write nothing more."""
    state.failure = reason
    state.last_event = time.monotonic()
    log.error("backup %s: %s", state.backup_id, reason)
    end(ctx, state)


def _check_exports(ctx: JobContext, state: JobState, end: End) -> None:
    """A dead qemu-nbd fails its job with qemu-nbd's own message; the node is told to
    stop the client (or, when it cannot be told, the job ends now)."""
    death = dead_export(ctx, state)
    if death is None:
        return
    state.failure = death
    state.last_event = time.monotonic()
    log.error("backup %s: %s", state.backup_id, state.failure)
    node = ctx.node_of(state.backup_id)
    try:
        if node is not None:
            ctx.node(node).cancel(state.backup_id)
    except SendenseError as err:
        log.warning("backup %s: cancelling on node: %s", state.backup_id, err)
        end(ctx, state)


def _ask_node(ctx: JobContext, state: JobState, now: float, end: End) -> None:
    node = ctx.node_of(state.backup_id)
    if node is None:
        return
    try:
        info = ctx.node(node).status(state.backup_id)
    except SendenseError as exc:
        since = ctx.live.node_lost_since.setdefault(state.backup_id, now)
        if now - since > NODE_LOST_SECONDS:
            state.failure = f"node {node.name} unreachable for {int(now - since)} s: {exc}"
            end(ctx, state)
        return
    ctx.live.node_lost_since.pop(state.backup_id, None)
    state.last_event = now
    if info is None:
        state.failure = f"node {node.name} no longer knows the job (was it restarted?)"
        end(ctx, state)
    elif info.state == NodeJobState.FINISHED and not state.exited:
        state.failure = (
            f"node {node.name} ended the job (exit code {info.exit_code}) "
            "but its final report never reached the hub"
        )
        end(ctx, state)
