"""A point's disk into a standalone image file on the hub: the ``disk`` restore job.

``qemu-img convert`` reads the point through its qcow2 chain and writes a file with no
backing: raw (sparse where the disk is sparse), qcow2, or a streamOptimized VMDK that
vSphere imports. Everything that can be refused is refused before the job exists (the
point, the disk key, the path, an existing file without ``force``, the free space). The
image is written to a temporary file beside the target and renamed over it only once it
is whole and on disk, so a failed or cancelled restore never costs the old file.

The qemu-img side (its command, what it is fast with) is in convert.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.restore import DiskRestoreRequest, RestoreJob
from engine.contract.status import DiskFormat, DiskStatus, JobStatus, RestoreKind
from engine.db.models import RestoreDisk
from engine.db.models import RestoreJob as RestoreRow
from engine.errors import BadInput, Conflict, NoSpace, NotFound, SendenseError
from engine.hub.exports.process import describe_exit
from engine.hub.restores.convert import (
    PROGRESS,
    chain_bytes,
    convert_argv,
    data_bytes,
    needed_bytes,
    on_disk,
    one_line,
    part_path,
    size_text,
    spawn,
    written_bytes,
)
from engine.hub.restores.points import completed_point, point_disk
from engine.hub.restores.store import LiveRestore, RestoreStore
from engine.repository import SYSTEM_TREES, list_repositories

log = logging.getLogger("sendense.hub.restores")

RATE_WINDOW_SECONDS = 2.0
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Plan:
    """A checked disk restore: what is read, and how much of it is data."""

    point_id: str
    vm_name: str
    disk_key: int
    source: Path
    capacity: int
    # The chain's data: measured when space was tight, else an upper bound until the
    # job measures it (beside its qemu-img convert, not before it).
    data: int
    measured: bool


@dataclass
class _Handoff:
    """From the request to the job's thread: the job once written (None: it was not)."""

    ready: threading.Event = field(default_factory=threading.Event)
    live: LiveRestore | None = None

    def abort(self) -> None:
        self.live = None
        self.ready.set()


def check_target(request: DiskRestoreRequest, forbidden: list[tuple[Path, str]]) -> int:
    """Refuse a target that cannot or must not be written (in one of the ``forbidden``
    folders: the system's, the restore points'); the free space where it would be."""
    target = Path(request.path)
    if not target.is_absolute():
        raise BadInput(f"restore target {request.path!r} must be an absolute path")
    folder = target.parent
    if not folder.is_dir():
        raise BadInput(f"folder {folder} does not exist")
    real = folder.resolve() / target.name
    for place, what in forbidden:
        if place == real or place in real.parents or place.resolve() in real.parents:
            raise BadInput(f"restore target {target} is in {what} ({place}): choose another")
    if target.is_dir():
        raise BadInput(f"restore target {target} is a folder")
    if target.exists() and not request.force:
        raise Conflict(f"{target} exists; --force replaces it")
    space = os.statvfs(folder)
    return space.f_bavail * space.f_frsize


class DiskRestores:
    def __init__(self, settings: Settings, store: RestoreStore) -> None:
        self.settings = settings
        self.store = store
        self.lock = threading.Lock()
        self._targets: set[Path] = set()  # files a restore writes now
        self._threads: dict[str, threading.Thread] = {}
        self._stopping = False

    @property
    def qemu_img(self) -> str:
        return self.settings.nbd.qemu_img

    # -- starting -------------------------------------------------------------------------

    def _plan(self, s: Session, request: DiskRestoreRequest) -> Plan:
        row = completed_point(s, request.point_id)
        disk = point_disk(row, request.disk_key)
        source, capacity = Path(disk.qcow2_path), disk.bytes_total
        forbidden = [(tree, "a system folder") for tree in SYSTEM_TREES]
        forbidden += [(Path(r.path), f"repository {r.name}") for r in list_repositories(s)]
        forbidden.append((self.settings.home.expanduser(), "Sendense's data folder"))
        free = check_target(request, forbidden)
        # What the chain's files take bounds its data from above: enough room for that
        # is enough, and only a tight fit is worth measuring the data (qemu-img map).
        data, measured = min(chain_bytes(source), capacity), False
        if needed_bytes(request.format, data, capacity) > free:
            data, measured = data_bytes(self.qemu_img, source), True
            needed = needed_bytes(request.format, data, capacity)
            if needed > free:
                target = Path(request.path)
                raise NoSpace(
                    f"too little space in {target.parent} for {target.name}: "
                    f"needs {size_text(needed)}, {size_text(free)} free"
                )
        return Plan(row.id, row.vm_name, disk.disk_key, source, capacity, data, measured)

    def start(self, request: DiskRestoreRequest) -> RestoreJob:
        """Check everything, then write the pending job while its thread already starts
        qemu-img (the database's commit is not on the copy's path)."""
        target = Path(request.path)
        with self.lock:
            if self._stopping:
                raise Conflict("the hub is stopping")
            if target in self._targets:
                raise Conflict(f"a restore is writing {target} already")
            handoff = _Handoff()
            try:
                with self.store.session() as s:
                    plan = self._plan(s, request)
                    restore_id = self.store.new_id(s, plan.vm_name)
                    thread = threading.Thread(
                        target=self._run,
                        args=(restore_id, plan, request, handoff),
                        name=f"restore-{restore_id}",
                        daemon=True,
                    )
                    thread.start()
                    handoff.live = self.store.add(s, self._row(restore_id, plan, request))
            except BaseException:
                if handoff.live is not None:  # followed, but its row was never written
                    with contextlib.suppress(NotFound):
                        self.store.finish(restore_id, JobStatus.FAILED)
                handoff.abort()
                raise
            handoff.ready.set()
            self._targets.add(target)
            self._threads[restore_id] = thread
        log.info("disk restore %s of %s disk %s", restore_id, plan.point_id, plan.disk_key)
        return self.store.view(restore_id)

    @staticmethod
    def _row(restore_id: str, plan: Plan, request: DiskRestoreRequest) -> RestoreRow:
        return RestoreRow(
            id=restore_id,
            kind=RestoreKind.DISK,
            backup_job_id=plan.point_id,
            vm_name=plan.vm_name,
            target=request.path,
            status=JobStatus.PENDING,
            request=request.model_dump_json(),
            total_bytes=plan.capacity,
            disks=[
                RestoreDisk(
                    disk_key=plan.disk_key,
                    source_disk_key=plan.disk_key,
                    source_path=str(plan.source),
                    target=request.path,
                    status=DiskStatus.QEMU_STARTED,
                    bytes_total=plan.capacity,
                )
            ],
        )

    # -- running --------------------------------------------------------------------------

    def _run(
        self, restore_id: str, plan: Plan, request: DiskRestoreRequest, handoff: _Handoff
    ) -> None:
        """The job's thread: qemu-img dies with it, so it starts qemu-img itself."""
        target = Path(request.path)
        part = part_path(target, restore_id)
        argv = convert_argv(
            self.qemu_img, plan.source, part, request.format, max_rate_mib=request.max_rate_mib
        )
        proc = None
        status, error = JobStatus.FAILED, None
        try:
            # Made here, private: qemu-img keeps the mode of a file it writes over, and a
            # disk's bytes are nobody else's to read.
            os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            proc = spawn(argv)
            handoff.ready.wait()
            live = handoff.live
            if live is None:  # the job was never written: nothing happened
                return
            live.canceller = proc.terminate
            if live.cancel_requested.is_set():
                proc.terminate()
            status, error = self._write(live, plan, request, proc, part)
        except Exception as exc:  # whatever it was, the job ends with it and nothing stays
            log.exception("disk restore %s", restore_id)
            error = f"disk {plan.disk_key}: {exc}"
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if status != JobStatus.COMPLETED:
                part.unlink(missing_ok=True)
            handoff.ready.wait()  # a job written after an early failure is ended too
            if handoff.live is not None:
                with self.lock:
                    self._targets.discard(target)
                    self._threads.pop(restore_id, None)
                if status != JobStatus.COMPLETED and self._stopping:
                    status, error = JobStatus.FAILED, "the hub stopped while it ran"
                self.store.finish(restore_id, status, error)

    def _write(
        self,
        live: LiveRestore,
        plan: Plan,
        request: DiskRestoreRequest,
        proc: subprocess.Popen[bytes],
        part: Path,
    ) -> tuple[JobStatus, str | None]:
        self.store.running(live.restore_id)  # the database's part, while qemu-img works
        if not plan.measured:
            plan = replace(plan, data=self._measure(plan), measured=True)
        assert proc.stdout is not None and proc.stderr is not None
        with proc.stdout, proc.stderr:
            self._follow(proc, live.restore_id, plan, request.format)
            said = proc.stderr.read().decode(errors="replace")
        returncode = proc.wait()
        if live.cancel_requested.is_set():
            return JobStatus.CANCELLED, None
        if returncode != 0:
            reason = f"disk {plan.disk_key}: qemu-img convert {describe_exit(returncode)}"
            return JobStatus.FAILED, reason + (f": {one_line(said)}" if said.strip() else "")
        target = Path(request.path)
        if target.exists():
            # Replacing a file: the new one is on disk before the old one goes, so not
            # even a crash right after costs the old file. A new file is like qemu-img's
            # or cp's own: in the page cache until the kernel writes it back.
            on_disk(part)
        os.replace(part, target)
        self.store.update_disk(
            live.restore_id,
            plan.disk_key,
            status=DiskStatus.COMPLETED,
            bytes_done=plan.capacity,
            bytes_zero=plan.capacity - plan.data,
            rate_bps=0.0,
        )
        return JobStatus.COMPLETED, None

    def _measure(self, plan: Plan) -> int:
        """The chain's data, for the job's numbers (its upper bound if unreadable)."""
        try:
            return data_bytes(self.qemu_img, plan.source)
        except SendenseError as exc:
            log.warning("disk restore of %s: %s", plan.source, exc)
            return plan.data

    def _follow(
        self, proc: subprocess.Popen[bytes], restore_id: str, plan: Plan, fmt: DiskFormat
    ) -> None:
        """The disk's live numbers until qemu-img's output ends.

        ``-p``'s percentage counts chunks as qemu-img takes them up, ahead of what is
        written (all of a small disk at once, and a throttle's wait comes after it); the
        bytes qemu-img has written (``wchar`` in /proc) are what reached the file. A VMDK
        is written compressed, so its progress is the percentage."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        by_percent = fmt == DiskFormat.VMDK
        share = 0.0
        samples: deque[tuple[float, int]] = deque()
        while True:
            readable, _, _ = select.select([fd], [], [], POLL_SECONDS)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return
                found = PROGRESS.findall(chunk)
                if by_percent and found:
                    share = max(share, float(found[-1]) / 100.0)
            if not by_percent:  # (a process that just ended reads as 0: never back)
                written = written_bytes(proc.pid) / plan.data if plan.data else 1.0
                share = max(share, written)
            share = min(share, 1.0)
            done = int(plan.capacity * share)
            now = time.monotonic()
            samples.append((now, done))
            while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_SECONDS:
                samples.popleft()
            span = now - samples[0][0]
            self.store.update_disk(
                restore_id,
                plan.disk_key,
                status=DiskStatus.COPYING,
                bytes_done=done,
                bytes_zero=int((plan.capacity - plan.data) * share),
                rate_bps=(done - samples[0][1]) / span if span > 0 else 0.0,
            )

    # -- restart and stop -----------------------------------------------------------------

    def reconcile(self) -> list[str]:
        """After a hub restart: a disk restore that was running died with the hub; fail it
        and remove its temporary file."""
        notes = []
        with self.store.session() as s:
            rows = [r for r in self.store.active_rows(s) if r.kind == RestoreKind.DISK]
            for row in rows:
                part_path(Path(row.target), row.id).unlink(missing_ok=True)
                for disk in row.disks:
                    disk.status = DiskStatus.FAILED
            ids = [r.id for r in rows]
        for restore_id in ids:
            self.store.finish(restore_id, JobStatus.FAILED, "the hub restarted while it ran")
            notes.append(f"{restore_id}: failed (the hub restarted while it ran)")
        return notes

    def shutdown(self, wait: float = 10.0) -> None:
        """The hub stops: stop every disk restore (each fails, its partial file removed)."""
        with self.lock:
            self._stopping = True
            threads = list(self._threads.items())
        for restore_id, thread in threads:
            live = self.store.live(restore_id)
            if live is not None:
                live.cancel_requested.set()
                if live.canceller is not None:
                    live.canceller()
            thread.join(wait)
