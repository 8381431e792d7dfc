"""The hub's job manager: start a backup, follow it, end it — and undo what a failure left.

One ``JobManager`` per hub process. Its methods are synchronous (database, qemu-nbd,
HTTP to nodes) and are called from worker threads; the in-memory state is guarded by
one lock. The rules it keeps:

- ``start`` either answers with every export running and the node holding the job, or
  leaves nothing behind (exports stopped, new qcow2 files deleted, rows deleted).
- A job completes only when every disk reported ``disk_done``, the client said
  ``done completed`` and the node saw it exit 0; the qcow2 files must then pass
  ``qemu-img check``. Anything else fails it with the reason, and the files of a failed
  restore point are removed, so a bad restore point is never there to be used.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.credentials import CredentialError, VMwareCredentialService
from engine.db.models import (
    BackupDisk,
    BackupJob,
    BackupRepository,
    VMDisk,
    VMReplicationContext,
    utcnow,
)
from engine.db.session import session_scope
from engine.errors import BadInput, Conflict, NotFound
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportError, ExportManager
from engine.hub.nodes import (
    NodeClient,
    NodeRef,
    NodeUnreachable,
    mark_seen,
    node_ref,
    pick_node,
)
from engine.hub.progress import KNOWN_TYPES, DiskState, JobState
from engine.hub.views import job_view
from engine.repository import restore_point_path

log = logging.getLogger("sendense.hub.jobs")

ACTIVE = ("pending", "running")
# How long a cancelled or faulted job waits for the node's exit report before the hub
# ends it on its own.
EXIT_WAIT_SECONDS = 30.0
# A node silent this long is asked about the job; unreachable this long fails it.
NODE_QUIET_SECONDS = 10.0
NODE_LOST_SECONDS = 120.0
CANCEL_WAIT_SECONDS = 20.0


def export_name(vm_name: str, disk_key: int, backup_id: str) -> str:
    """``<vm>-disk<key>-<backup suffix>``: distinct across jobs, safe in an NBD URI."""
    suffix = backup_id.removeprefix(f"backup-{vm_name}-")
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{vm_name}-disk{disk_key}-{suffix}")


class JobManager:
    def __init__(
        self, settings: Settings, exports: ExportManager, bus: EventBus, token: str
    ) -> None:
        self.settings = settings
        self.exports = exports
        self.bus = bus
        self.token = token
        self._lock = threading.RLock()
        self._jobs: dict[str, JobState] = {}
        self._starting: set[str] = set()
        self._done: dict[str, threading.Event] = {}
        self._node_lost_since: dict[str, float] = {}
        self._db_lock = threading.Lock()

    def session(self) -> Any:
        return session_scope(self.settings.db_url)

    # ---- views ------------------------------------------------------------------

    def state(self, backup_id: str) -> JobState | None:
        with self._lock:
            return self._jobs.get(backup_id)

    def active_ids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    def view(self, session: Session, row: BackupJob) -> dict[str, Any]:
        with self._lock:
            return job_view(row, self._jobs.get(row.id))

    def get(self, backup_id: str) -> dict[str, Any]:
        with self.session() as s:
            row = s.get(BackupJob, backup_id)
            if row is None:
                raise NotFound(f"backup {backup_id} does not exist")
            return self.view(s, row)

    def publish_job(self, backup_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.bus.publish("job", self.get(backup_id))

    # ---- start ------------------------------------------------------------------

    def start(
        self,
        vm_name: str,
        repository_id: int,
        backup_type: str,
        *,
        max_rate_mib: float | None = None,
    ) -> dict[str, Any]:
        if backup_type != "full":
            raise BadInput(f'backup_type {backup_type!r} is not supported yet; use "full"')
        with self._lock:
            if vm_name in self._starting or any(j.vm_name == vm_name for j in self._jobs.values()):
                raise Conflict(f"VM {vm_name} already has a backup running")
            self._starting.add(vm_name)
        try:
            return self._start(vm_name, repository_id, backup_type, max_rate_mib)
        finally:
            with self._lock:
                self._starting.discard(vm_name)

    def _start(
        self, vm_name: str, repository_id: int, backup_type: str, max_rate_mib: float | None
    ) -> dict[str, Any]:
        with self.session() as s:
            ctx = s.scalars(
                select(VMReplicationContext)
                .where(VMReplicationContext.vm_name == vm_name)
                .order_by(VMReplicationContext.updated_at.desc())
            ).first()
            if ctx is None:
                raise NotFound(f"VM {vm_name!r} has no context: add it first (POST /api/v1/vms)")
            repo = s.get(BackupRepository, repository_id)
            if repo is None or not repo.enabled:
                raise NotFound(f"repository {repository_id} does not exist")
            if ctx.credential_id is None:
                raise BadInput("VM context missing credential_id")
            busy = s.scalar(
                select(BackupJob.id).where(
                    BackupJob.vm_context_id == ctx.context_id, BackupJob.status.in_(ACTIVE)
                )
            )
            if busy:
                raise Conflict(f"VM {vm_name} already has a backup running ({busy})")
            if not ctx.disks:
                raise BadInput(f"VM {vm_name} has no disks recorded: refresh its context")
            try:
                creds = VMwareCredentialService(s, self.settings.key_path).get_credentials(
                    ctx.credential_id
                )
            except CredentialError as exc:
                raise BadInput(str(exc)) from None
            node = pick_node(s)
            backup_id = _unique_backup_id(s, vm_name)
            repo_path = Path(repo.path)
            disks = [(d.disk_key, d.capacity_bytes) for d in ctx.disks]
            context_id, vm_path = ctx.context_id, ctx.vm_path
            job = BackupJob(
                id=backup_id,
                vm_context_id=context_id,
                vm_name=vm_name,
                repository_id=repo.id,
                node_id=node.id,
                backup_type=backup_type,
                status="pending",
                total_bytes=sum(c for _, c in disks),
            )
            for key, capacity in disks:
                job.disks.append(
                    BackupDisk(
                        disk_key=key,
                        nbd_export_name=export_name(vm_name, key, backup_id),
                        qcow2_path=str(restore_point_path(repo_path, vm_name, key, backup_id)),
                        bytes_total=capacity,
                    )
                )
            s.add(job)

        state = JobState(backup_id=backup_id, vm_name=vm_name, node_url=node.url, disks={})
        created: list[Path] = []
        try:
            results = []
            for key, capacity in disks:
                name = export_name(vm_name, key, backup_id)
                path = restore_point_path(repo_path, vm_name, key, backup_id)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.exports.create_image(path, capacity)
                created.append(path)
                export = self.exports.start(name, path)
                state.disks[key] = DiskState(
                    disk_key=key,
                    export_name=name,
                    port=export.port,
                    qcow2_path=str(path),
                    bytes_total=capacity,
                )
                results.append(
                    {
                        "disk_id": key,
                        "nbd_port": export.port,
                        "nbd_export_name": name,
                        "qcow2_path": str(path),
                        "qemu_nbd_pid": export.pid,
                        "status": "qemu_started",
                    }
                )
            targets = ",".join(
                f"{r['disk_id']}:nbd://127.0.0.1:{r['nbd_port']}/{r['nbd_export_name']}"
                for r in results
            )
            with self.session() as s:
                for d in s.scalars(select(BackupDisk).where(BackupDisk.backup_job_id == backup_id)):
                    r = next(r for r in results if r["disk_id"] == d.disk_key)
                    d.nbd_port, d.qemu_nbd_pid, d.status = (
                        r["nbd_port"],
                        r["qemu_nbd_pid"],
                        "qemu_started",
                    )
            self._register(state)
            NodeClient(node, self.token).start(
                {
                    "vm_name": vm_name,
                    "vcenter_host": creds.vcenter_host,
                    "vcenter_user": creds.username,
                    "vcenter_password": creds.password,
                    "vcenter_thumbprint": creds.thumbprint,
                    "vm_path": vm_path,
                    "nbd_host": "127.0.0.1",
                    "nbd_targets": targets,
                    "job_id": backup_id,
                    "backup_type": backup_type,
                    "max_rate_mib": max_rate_mib,
                }
            )
            with self.session() as s:
                row = s.get(BackupJob, backup_id)
                assert row is not None
                if row.status == "pending":  # a client that ended at once is already final
                    row.status, row.started_at = "running", utcnow()
                mark_seen(s, node.id)
        except BaseException:
            self._undo_start(backup_id, state, created)
            raise
        log.info("backup %s of %s started on node %s: %s", backup_id, vm_name, node.name, targets)
        self.publish_job(backup_id)
        return {
            "backup_id": backup_id,
            "vm_context_id": context_id,
            "vm_name": vm_name,
            "disk_results": results,
            "nbd_targets_string": targets,
            "status": "started",
        }

    def _register(self, state: JobState) -> None:
        with self._lock:
            self._jobs[state.backup_id] = state
            self._done[state.backup_id] = threading.Event()

    def _forget(self, backup_id: str) -> None:
        with self._lock:
            self._jobs.pop(backup_id, None)
            self._node_lost_since.pop(backup_id, None)
            done = self._done.pop(backup_id, None)
        if done is not None:
            done.set()

    def _undo_start(self, backup_id: str, state: JobState, created: list[Path]) -> None:
        self._forget(backup_id)
        for disk in state.disks.values():
            self._stop_export(disk.export_name)
        for path in created:
            _remove_restore_point(path)
        with self.session() as s:
            row = s.get(BackupJob, backup_id)
            if row is not None:
                s.delete(row)

    def _stop_export(self, name: str) -> None:
        try:
            self.exports.stop(name)
        except ExportError as exc:
            log.warning("stopping export %s: %s", name, exc)

    # ---- progress from nodes ------------------------------------------------------

    def ingest(self, backup_id: str, lines: list[dict[str, Any]]) -> None:
        with self._lock:
            state = self._jobs.get(backup_id)
            if state is None:
                known = None
            else:
                changed = False
                for line in lines:
                    if line.get("type") in KNOWN_TYPES:
                        changed |= state.apply(line)
                finish = state.exited and not state.finalizing
                if finish:
                    state.finalizing = True
        if state is None:
            with self.session() as s:
                known = s.get(BackupJob, backup_id)
                if known is None:
                    raise NotFound(f"backup {backup_id} does not exist")
            return  # a late report for a job already ended: nothing to do
        if changed:
            self.publish_job(backup_id)
        if finish:
            threading.Thread(
                target=self.finalize, args=(backup_id,), name=f"finalize-{backup_id}", daemon=True
            ).start()

    def flush_progress(self) -> None:
        """Write the latest numbers of every running disk; called every few seconds.

        Serialised with ``finalize``'s write (``_db_lock``) and skipping jobs being
        finalized, so a late flush never overwrites a job's final state.
        """
        with self._db_lock:
            with self._lock:
                pending = {
                    job_id: st.take_db() for job_id, st in self._jobs.items() if not st.finalizing
                }
            pending = {k: v for k, v in pending.items() if v}
            if pending:
                self._write_progress(pending)

    def _write_progress(self, pending: dict[str, list[DiskState]]) -> None:
        with self.session() as s:
            for job_id, disks in pending.items():
                rows = {
                    d.disk_key: d
                    for d in s.scalars(select(BackupDisk).where(BackupDisk.backup_job_id == job_id))
                }
                for disk in disks:
                    row = rows.get(disk.disk_key)
                    if row is not None:
                        row.status = disk.status
                        row.bytes_done = disk.bytes_done
                        row.bytes_total = disk.bytes_total
                        row.bytes_zero = disk.bytes_zero
                job = s.get(BackupJob, job_id)
                if job is not None:
                    job.bytes_transferred = sum(r.bytes_done for r in rows.values())

    def disk_events(self) -> list[dict[str, Any]]:
        """Disk events changed since the last call; the caller paces it (a few per second)."""
        with self._lock:
            return [event for st in self._jobs.values() for event in st.take_sse()]

    # ---- end ----------------------------------------------------------------------

    def finalize(self, backup_id: str) -> None:
        """End a job whose client exited (or that the hub gave up on)."""
        with self._lock:
            state = self._jobs.get(backup_id)
            if state is None:
                return
            state.finalizing = True
            status, reason = state.outcome()
        for disk in state.disks.values():
            self._stop_export(disk.export_name)
        sizes: dict[int, int] = {}
        if status == "completed":
            for disk in state.disks.values():
                problem = qcow2_check(self.settings.nbd.qemu_img, Path(disk.qcow2_path))
                if problem:
                    status, reason = "failed", f"disk {disk.disk_key}: {problem}"
                    break
                sizes[disk.disk_key] = Path(disk.qcow2_path).stat().st_size
        if status != "completed":
            for disk in state.disks.values():
                _remove_restore_point(Path(disk.qcow2_path))
        with self._db_lock, self.session() as s:
            row = s.get(BackupJob, backup_id)
            if row is not None:
                self._record_end(s, row, state, status, reason, sizes)
        log.info("backup %s %s%s", backup_id, status, f": {reason}" if reason else "")
        self.flush_sse_for(state)
        self._forget(backup_id)
        self.publish_job(backup_id)

    def flush_sse_for(self, state: JobState) -> None:
        for disk in state.disks.values():
            self.bus.publish("disk", disk.to_event(state.backup_id))

    def _record_end(
        self,
        s: Session,
        row: BackupJob,
        state: JobState,
        status: str,
        reason: str | None,
        sizes: dict[int, int],
    ) -> None:
        row.status = status
        row.error_message = reason
        row.completed_at = utcnow()
        row.snapshot_kind = state.snapshot_kind or row.snapshot_kind
        for d in row.disks:
            live = state.disks.get(d.disk_key)
            if live is None:
                continue
            d.bytes_done, d.bytes_zero, d.bytes_total = (
                live.bytes_done,
                live.bytes_zero,
                live.bytes_total,
            )
            d.error_message = live.error
            if status == "completed":
                d.status = "completed"
                d.change_id = live.change_id
                d.qcow2_size_bytes = sizes.get(d.disk_key)
                live.status = "completed"
            else:
                d.status = status  # its restore point is deleted with the job's
                live.status = d.status
        row.bytes_transferred = sum(d.bytes_done for d in row.disks)
        if status == "completed":
            by_key = {d.disk_key: d.change_id for d in row.disks}
            for vd in s.scalars(select(VMDisk).where(VMDisk.vm_context_id == row.vm_context_id)):
                if vd.disk_key in by_key:
                    vd.change_id = by_key[vd.disk_key]

    def cancel(self, backup_id: str) -> dict[str, Any]:
        with self._lock:
            state = self._jobs.get(backup_id)
            done = self._done.get(backup_id)
        if state is None or done is None:
            current = self.get(backup_id)  # 404 when unknown
            raise Conflict(f"backup {backup_id} is not running (status {current['status']})")
        state.cancel_requested = True
        node = self._node_for(backup_id)
        try:
            if node is not None:
                NodeClient(node, self.token).cancel(backup_id)
        except NodeUnreachable:
            state.cancel_requested = False
            raise
        done.wait(CANCEL_WAIT_SECONDS)
        return self.get(backup_id)

    def _node_for(self, backup_id: str) -> NodeRef | None:
        with self.session() as s:
            row = s.get(BackupJob, backup_id)
            return node_ref(s, row.node_id) if row else None

    def node_log(self, backup_id: str, lines: int) -> list[str]:
        node = self._node_for(backup_id)
        if node is None:
            raise NotFound(f"backup {backup_id} does not exist")
        return NodeClient(node, self.token).log(backup_id, lines)

    # ---- watching -----------------------------------------------------------------

    def watch(self) -> None:
        """One round of checks on every running job; called about once a second.

        A dead qemu-nbd fails its job with qemu-nbd's own message; a node that fell
        silent is asked about the job; a job waiting too long for its exit report is
        ended by the hub.
        """
        now = time.monotonic()
        with self._lock:
            states = [st for st in self._jobs.values() if not st.finalizing]
        for state in states:
            if state.failure is None and not state.exited:
                self._check_exports(state)
            if state.failure is not None or state.cancel_requested:
                if now - state.last_event > EXIT_WAIT_SECONDS:
                    self._finalize_now(state)
                continue
            if now - state.last_event > NODE_QUIET_SECONDS:
                self._ask_node(state, now)

    def _check_exports(self, state: JobState) -> None:
        for disk in state.disks.values():
            try:
                self.exports.check(disk.export_name)
            except ExportError as exc:
                state.failure = (
                    f"disk {disk.disk_key}: qemu-nbd export {disk.export_name} died: {exc}"
                )
                state.last_event = time.monotonic()
                log.error("backup %s: %s", state.backup_id, state.failure)
                node = self._node_for(state.backup_id)
                try:
                    if node is not None:
                        NodeClient(node, self.token).cancel(state.backup_id)
                except Exception as err:  # the node cannot be told: end the job now
                    log.warning("backup %s: cancelling on node: %s", state.backup_id, err)
                    self._finalize_now(state)
                return

    def _ask_node(self, state: JobState, now: float) -> None:
        node = self._node_for(state.backup_id)
        if node is None:
            return
        try:
            info = NodeClient(node, self.token).status(state.backup_id)
        except Exception as exc:
            since = self._node_lost_since.setdefault(state.backup_id, now)
            if now - since > NODE_LOST_SECONDS:
                state.failure = f"node {node.name} unreachable for {int(now - since)} s: {exc}"
                self._finalize_now(state)
            return
        self._node_lost_since.pop(state.backup_id, None)
        state.last_event = now
        if info is None:
            state.failure = f"node {node.name} no longer knows the job (was it restarted?)"
            self._finalize_now(state)
        elif info.get("state") == "finished" and not state.exited:
            state.failure = (
                f"node {node.name} ended the job (exit code {info.get('exit_code')}) "
                "but its final report never reached the hub"
            )
            self._finalize_now(state)

    def _finalize_now(self, state: JobState) -> None:
        with self._lock:
            if state.finalizing:
                return
            state.finalizing = True
        self.finalize(state.backup_id)

    # ---- restart ------------------------------------------------------------------

    def reconcile(self) -> list[str]:
        """After a hub restart: follow jobs their node still runs, fail the others.

        Returns one line per job, saying what became of it.
        """
        adopted, cleaned = self.exports.adopt()
        notes = [f"exports: {len(adopted)} adopted, {len(cleaned)} cleaned"]
        keep: set[str] = set()
        with self.session() as s:
            rows = list(s.scalars(select(BackupJob).where(BackupJob.status.in_(ACTIVE))))
            plans = [(r.id, r.vm_name, node_ref(s, r.node_id), list(r.disks)) for r in rows]
        for backup_id, vm_name, node, disks in plans:
            state = JobState(
                backup_id=backup_id,
                vm_name=vm_name,
                node_url=node.url if node else "",
                disks={
                    d.disk_key: DiskState(
                        disk_key=d.disk_key,
                        export_name=d.nbd_export_name,
                        port=d.nbd_port,
                        qcow2_path=d.qcow2_path,
                        status=d.status,
                        bytes_done=d.bytes_done,
                        bytes_total=d.bytes_total,
                        bytes_zero=d.bytes_zero,
                    )
                    for d in disks
                },
            )
            reason = self._still_running(backup_id, node, state)
            self._register(state)
            if reason is None:
                keep.update(d.export_name for d in state.disks.values())
                notes.append(f"{backup_id}: followed on")
            else:
                state.failure = f"hub restarted: {reason}"
                notes.append(f"{backup_id}: failed ({reason})")
                self._finalize_now(state)
        for export in self.exports.list():
            if export.name not in keep:
                self._stop_export(export.name)
        return notes

    def _still_running(self, backup_id: str, node: NodeRef | None, state: JobState) -> str | None:
        """None when the job can be followed on, else why not."""
        if node is None:
            return "its node is no longer configured"
        try:
            info = NodeClient(node, self.token).status(backup_id)
        except Exception as exc:
            return str(exc)
        if info is None:
            return f"node {node.name} does not know the job"
        if info.get("state") not in ("running", "exited"):
            code = info.get("exit_code")
            return f"node {node.name} ended it (exit code {code}) while the hub was down"
        for disk in state.disks.values():
            if self.exports.get(disk.export_name) is None:
                return f"the export of disk {disk.disk_key} did not survive the restart"
        return None

    def shutdown(self) -> None:
        """Hub stopping: jobs go on in the node; exports stay up for the next hub to adopt."""
        with self._lock:
            self._jobs.clear()


def _unique_backup_id(s: Session, vm_name: str) -> str:
    base = f"backup-{vm_name}-{int(time.time())}"
    candidate, n = base, 1
    while s.get(BackupJob, candidate) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _remove_restore_point(path: Path) -> None:
    """Delete a qcow2 that is not a good restore point, and its folders if now empty."""
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break


def qcow2_check(qemu_img: str, path: Path) -> str | None:
    """None when ``qemu-img check`` finds the image sound, else what it found.

    Leaked clusters (exit 3) waste space but lose no data, so they pass.
    """
    proc = subprocess.run(
        [qemu_img, "check", "-f", "qcow2", str(path)], capture_output=True, text=True
    )
    if proc.returncode in (0, 3):
        return None
    text = (proc.stderr or proc.stdout).strip().splitlines()
    return f"qemu-img check failed (exit {proc.returncode}): {text[-1] if text else 'no output'}"
