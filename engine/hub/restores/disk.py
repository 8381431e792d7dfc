"""A point's disk into a standalone image file on the hub: the ``disk`` restore job.

``qemu-img convert`` reads the point through its qcow2 chain and writes a file with no
backing: raw (sparse where the disk is sparse), qcow2, or a streamOptimized VMDK that
vSphere imports. Everything that can be refused is refused before the job exists (the
point, the disk key, the path, an existing file without ``force``, the free space). The
image is written to a temporary file beside the target and renamed over it only once it
is whole and on disk, so a failed or cancelled restore never costs the old file.

Speed: out-of-order writes (``-W``) with 16 coroutines, and ``O_DIRECT`` writes where the
target's file system takes them (no page cache to flush afterwards, and none evicted
from the hub's backups); the bench (bench/bench_restore.py) compares it with a plain
``qemu-img convert -O raw``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.restore import DiskRestoreRequest, RestoreJob
from engine.contract.status import DiskFormat, DiskStatus, JobStatus, RestoreKind
from engine.db.models import RestoreDisk
from engine.db.models import RestoreJob as RestoreRow
from engine.errors import BadInput, Conflict, NoSpace, NotFound, SendenseError
from engine.hub.exports.process import describe_exit, o_direct_works
from engine.hub.restores.points import completed_point, point_disk
from engine.hub.restores.store import LiveRestore, RestoreStore

log = logging.getLogger("sendense.hub.restores")

MiB = 1024 * 1024
COROUTINES = 16  # qemu-img's maximum
RATE_WINDOW_SECONDS = 2.0
# ``qemu-img convert -p`` prints ``    (12.34/100%)\r`` whenever a percent more is done.
PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the thread that started it dies (a hub that crashed
    leaves no qemu-img writing)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / MiB:.1f} MiB"


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def data_bytes(qemu_img: str, qcow2: Path) -> int:
    """What the point's chain holds as data (not holes, not zeroes)."""
    done = subprocess.run(
        [qemu_img, "map", "--output=json", "-f", "qcow2", str(qcow2)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SendenseError(f"qemu-img cannot read {qcow2}: {one_line(done.stderr)}")
    return sum(e["length"] for e in json.loads(done.stdout) if e["data"] and not e["zero"])


def needed_bytes(fmt: DiskFormat, data: int, capacity: int) -> int:
    """Room the image takes at most: its data, the format's tables, and a MiB to spare."""
    if fmt == DiskFormat.QCOW2:  # L2 tables and refcounts: 8 + 2 bytes a 64 KiB cluster
        return data + capacity // 4096 + MiB
    if fmt == DiskFormat.VMDK:  # grain tables, and a marker a 64 KiB grain
        return data + data // 64 + capacity // 8192 + MiB
    return data + MiB


def part_path(target: Path, restore_id: str) -> Path:
    """The temporary file beside ``target`` (found again from the job after a restart)."""
    digest = hashlib.sha256(restore_id.encode()).hexdigest()[:12]
    return target.with_name(f".{target.name[:180]}.{digest}.part")


def convert_argv(
    qemu_img: str,
    source: Path,
    output: Path,
    fmt: DiskFormat,
    *,
    direct: bool,
    max_rate_mib: float | None,
) -> list[str]:
    argv = [qemu_img, "convert", "-p", "-f", "qcow2", "-O", fmt.value]
    if fmt == DiskFormat.VMDK:
        # Compressed grains in order; out-of-order writes gain nothing here.
        argv += ["-o", "subformat=streamOptimized"]
    else:
        argv += ["-W", "-m", str(COROUTINES)]
        if direct:
            argv += ["-t", "none"]
    if max_rate_mib is not None:
        argv += ["-r", str(int(max_rate_mib * MiB))]
    return [*argv, str(source), str(output)]


@dataclass(frozen=True)
class Plan:
    """A checked disk restore: what is read, and how much of it is data."""

    point_id: str
    vm_name: str
    disk_key: int
    source: Path
    capacity: int
    data: int


def check_target(request: DiskRestoreRequest, needed: int) -> None:
    target = Path(request.path)
    if not target.is_absolute():
        raise BadInput(f"restore target {request.path!r} must be an absolute path")
    folder = target.parent
    if not folder.is_dir():
        raise NotFound(f"folder {folder} does not exist")
    if target.is_dir():
        raise BadInput(f"restore target {target} is a folder")
    if target.exists() and not request.force:
        raise Conflict(f"{target} exists; --force replaces it")
    space = os.statvfs(folder)
    free = space.f_bavail * space.f_frsize
    if free < needed:
        raise NoSpace(
            f"too little space in {folder} for {target.name}: "
            f"needs {size_text(needed)}, {size_text(free)} free"
        )


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
        source = Path(disk.qcow2_path)
        data = data_bytes(self.qemu_img, source)
        check_target(request, needed_bytes(request.format, data, disk.bytes_total))
        return Plan(row.id, row.vm_name, disk.disk_key, source, disk.bytes_total, data)

    def start(self, request: DiskRestoreRequest) -> RestoreJob:
        """Check everything, write the pending job, and run it in a thread of its own."""
        target = Path(request.path)
        with self.lock:
            if self._stopping:
                raise Conflict("the hub is stopping")
            if target in self._targets:
                raise Conflict(f"a restore is writing {target} already")
            live: LiveRestore | None = None
            try:
                with self.store.session() as s:
                    plan = self._plan(s, request)
                    live = self.store.add(s, self._row(s, plan, request))
            except Exception:
                if live is not None:  # followed, but its row was never written
                    with contextlib.suppress(NotFound):
                        self.store.finish(live.restore_id, JobStatus.FAILED)
                raise
            self._targets.add(target)
            thread = threading.Thread(
                target=self._run,
                args=(live, plan, request),
                name=f"restore-{live.restore_id}",
                daemon=True,
            )
            self._threads[live.restore_id] = thread
        thread.start()
        log.info("disk restore %s of %s disk %s", live.restore_id, plan.point_id, plan.disk_key)
        return self.store.view(live.restore_id)

    def _row(self, s: Session, plan: Plan, request: DiskRestoreRequest) -> RestoreRow:
        return RestoreRow(
            id=self.store.new_id(s, plan.vm_name),
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

    def _run(self, live: LiveRestore, plan: Plan, request: DiskRestoreRequest) -> None:
        target = Path(request.path)
        part = part_path(target, live.restore_id)
        status, error = JobStatus.FAILED, None
        try:
            status, error = self._write(live, plan, request, part)
        except Exception as exc:  # whatever it was, the job ends with it and nothing stays
            log.exception("disk restore %s", live.restore_id)
            error = f"disk {plan.disk_key}: {exc}"
        finally:
            if status != JobStatus.COMPLETED:
                part.unlink(missing_ok=True)
            with self.lock:
                self._targets.discard(target)
                self._threads.pop(live.restore_id, None)
            if status != JobStatus.COMPLETED and self._stopping:
                status, error = JobStatus.FAILED, "the hub stopped while it ran"
            self.store.finish(live.restore_id, status, error)

    def _write(
        self, live: LiveRestore, plan: Plan, request: DiskRestoreRequest, part: Path
    ) -> tuple[JobStatus, str | None]:
        # Claim the name first: whether O_DIRECT works is asked of a file on that system.
        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        direct = o_direct_works(part)
        argv = convert_argv(
            self.qemu_img,
            plan.source,
            part,
            request.format,
            direct=direct,
            max_rate_mib=request.max_rate_mib,
        )
        self.store.running(live.restore_id)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # a prctl only: takes no lock in the child
        )
        live.canceller = proc.terminate
        if live.cancel_requested.is_set():
            proc.terminate()
        assert proc.stdout is not None and proc.stderr is not None
        with proc.stdout, proc.stderr:
            self._follow(proc.stdout.fileno(), live.restore_id, plan)
            said = proc.stderr.read().decode(errors="replace")
        returncode = proc.wait()
        if live.cancel_requested.is_set():
            return JobStatus.CANCELLED, None
        if returncode != 0:
            reason = f"qemu-img convert {describe_exit(returncode)}"
            return JobStatus.FAILED, f"disk {plan.disk_key}: {reason}: {one_line(said)}"
        if not direct:  # written through the page cache: on disk before it counts
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        os.replace(part, request.path)
        _sync_folder(part.parent)
        self.store.update_disk(
            live.restore_id,
            plan.disk_key,
            status=DiskStatus.COMPLETED,
            bytes_done=plan.capacity,
            bytes_zero=plan.capacity - plan.data,
            rate_bps=0.0,
        )
        return JobStatus.COMPLETED, None

    def _follow(self, fd: int, restore_id: str, plan: Plan) -> None:
        """qemu-img's percentages as the disk's live numbers, until its output ends."""
        samples: deque[tuple[float, int]] = deque()
        while chunk := os.read(fd, 4096):
            found = PROGRESS.findall(chunk)
            if not found:
                continue
            share = min(float(found[-1]) / 100.0, 1.0)
            done = int(plan.capacity * share)
            now = time.monotonic()
            samples.append((now, done))
            while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_SECONDS:
                samples.popleft()
            span = now - samples[0][0]
            rate = (done - samples[0][1]) / span if span > 0 else 0.0
            self.store.update_disk(
                restore_id,
                plan.disk_key,
                status=DiskStatus.COPYING,
                bytes_done=done,
                bytes_zero=int((plan.capacity - plan.data) * share),
                rate_bps=rate,
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


def _sync_folder(folder: Path) -> None:
    """The rename itself on disk."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
