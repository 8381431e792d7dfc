"""Merging a chain: a point folded into its one child, copy-then-switch.

Per disk of the child that is an overlay on the point: the child's qcow2 is copied
(reflinked where the file system can) to ``<name>.merging`` beside it, the copy is rebased
in qemu-img's safe mode onto the point's parent file (a relative path), or onto nothing
when the point is the chain's full (the child becomes a synthetic full), checked, synced,
and renamed over the child. Until the rename the old child is whole; after it the new
one is, and it reads exactly as before. Only when every disk is switched do the rows
change and the point's files go. A merge that stops half way (an error, a crash) loses
no point: the switched disks build on the point's parent and read the same, the point is
still whole, the hub's next start removes the ``.merging`` leftovers, and merging again
finishes the job (a rebase onto the backing a file already has copies nothing).

No reader may be on the point or anything after it in its chain: ``Merging`` marks those
points for the whole merge; the starters of exports, restores, verifications and file
sessions refuse a marked point, and the merge holds the VM's backup claim meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.contract.restore import MergeResult
from engine.contract.status import BackupType, JobStatus
from engine.db.models import BackupDisk, BackupJob
from engine.db.session import session_scope
from engine.errors import Conflict, SendenseError
from engine.hub.jobs.ending import qcow2_check, remove_restore_point
from engine.hub.restores.points import (
    MAX_CHAIN,
    chain_of,
    completed_point,
    drop_point,
    export_names_of,
)

log = logging.getLogger("sendense.hub.restores")

MERGE_SUFFIX = ".merging"
# Beside each file of a point being merged away, written before the rows change: a hub
# that dies after the rows changed but before the files went finds them at its start.
MERGED_SUFFIX = ".merged"
FICLONE = 0x40049409  # linux/fs.h: share the extents of a whole file (btrfs, XFS)


def temp_of(qcow2: Path) -> Path:
    return qcow2.with_name(qcow2.name + MERGE_SUFFIX)


def marker_of(qcow2: Path) -> Path:
    return qcow2.with_name(qcow2.name + MERGED_SUFFIX)


class Merging:
    """The points merges work on now. A starter of a reader (export, restore, verify,
    file session) calls ``refuse`` where it registers its reader, or holds ``starting``
    around check and registration; a merge marks its points before it looks for readers,
    so one of the two always sees the other."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.points: set[str] = set()

    def refuse(self, point_id: str) -> None:
        if point_id in self.points:
            raise Conflict(f"point {point_id} is being merged: wait for the merge")

    @contextlib.contextmanager
    def starting(self, point_id: str) -> Iterator[None]:
        with self.lock:
            self.refuse(point_id)
            yield


@dataclass(frozen=True)
class Readers:
    """What reads points, as the merge asks about them."""

    restoring: Callable[[], set[str]]  # RestoreStore.busy_points
    verifying: Callable[[], set[str]]  # VerifyManager.busy_points
    browsing: Callable[[set[str]], set[str]]  # Sessions.close_points: those still in use
    claim_vm: Callable[[str, str, str], AbstractContextManager[None]]  # LiveJobs.claim


@dataclass(frozen=True)
class Switch:
    qcow2: Path  # the child's disk
    backing: str | None  # its new backing file as the rows hold it (None: standalone)


@dataclass(frozen=True)
class Plan:
    point_id: str
    child_id: str
    context_id: str
    vm_name: str
    points: set[str]  # the point and everything after it
    switches: dict[int, Switch]  # disk key -> what changes
    files: list[Path]  # the point's own qcow2 files, removed once the rows changed


def _descendants(s: Session, point_id: str) -> set[str]:
    found, todo = {point_id}, [point_id]
    while todo and len(found) < MAX_CHAIN:
        rows = select(BackupJob.id).where(BackupJob.parent_backup_id == todo.pop())
        for child in s.scalars(rows):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _plan(s: Session, point_id: str) -> Plan:
    row = completed_point(s, point_id)
    rows = select(BackupJob).where(
        BackupJob.parent_backup_id == point_id, BackupJob.status == JobStatus.COMPLETED
    )
    children = list(s.scalars(rows.order_by(BackupJob.id)))
    if not children:
        raise Conflict(f"nothing to merge into: {point_id} is the newest point of its chain")
    if len(children) > 1:
        ids = ", ".join(c.id for c in children)
        raise Conflict(f"point {point_id} has {len(children)} points building on it ({ids})")
    child = children[0]
    mine = {d.disk_key: d for d in row.disks}
    switches = {}
    for d in child.disks:
        base = mine.get(d.disk_key)
        # A disk copied whole (a fallback) does not build on the point: nothing to do.
        if (
            base is not None
            and d.parent_qcow2_path
            and Path(d.parent_qcow2_path) == Path(base.qcow2_path)
        ):
            switches[d.disk_key] = Switch(Path(d.qcow2_path), base.parent_qcow2_path)
    files = [Path(d.qcow2_path) for d in row.disks]
    return Plan(
        point_id,
        child.id,
        row.vm_context_id,
        row.vm_name,
        _descendants(s, point_id),
        switches,
        files,
    )


def _refuse_readers(s: Session, plan: Plan, readers: Readers) -> None:
    def first(ids: set[str]) -> str:
        return sorted(ids)[0]

    for pid in sorted(plan.points):
        exports = export_names_of(s, pid)
        if exports:
            raise Conflict(
                f"point {pid} has a live export ({', '.join(exports)}): unexport it first"
            )
    if busy := readers.restoring() & plan.points:
        raise Conflict(f"point {first(busy)} is being restored: wait for the restore or cancel it")
    if busy := readers.verifying() & plan.points:
        raise Conflict(f"point {first(busy)} is being verified: wait for the verification")
    if busy := readers.browsing(plan.points):
        raise Conflict(f"point {first(busy)} has its files read now: wait for the reads")


# -- files --------------------------------------------------------------------------------


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Bytes [start, end) at the same offsets: ``copy_file_range`` (which may share
    extents), or reads and writes where the kernel cannot."""
    pos = start
    while pos < end:
        try:
            n = os.copy_file_range(src, dst, end - pos, pos, pos)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            n = 0
        if n == 0:
            data = os.pread(src, min(end - pos, 1 << 20), pos)
            if not data:
                return
            n = os.pwrite(dst, data, pos)
        pos += n


def clone_file(src: Path, dst: Path) -> None:
    """``cp --reflink=auto --sparse=always`` for one file: a reflink where the file system
    has them, else the data runs copied and the holes left holes."""
    with src.open("rb") as fi, dst.open("xb") as fo:
        try:
            fcntl.ioctl(fo.fileno(), FICLONE, fi.fileno())
            return
        except OSError:
            pass
        size = os.fstat(fi.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                data = os.lseek(fi.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole after offset
                    break
                raise
            hole = os.lseek(fi.fileno(), data, os.SEEK_HOLE)
            _copy_range(fi.fileno(), fo.fileno(), data, hole)
            offset = hole
        os.ftruncate(fo.fileno(), size)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def switch_disk(qemu_img: str, point_id: str, switch: Switch) -> int:
    """The child's disk rebased (copy, rebase, check, sync, rename); the bytes its file grew
    by (what the rebase copied in from the merged layer)."""
    child = switch.qcow2
    temp = temp_of(child)
    temp.unlink(missing_ok=True)
    before = child.stat().st_size
    clone_file(child, temp)
    try:
        if switch.backing is None:
            target = ["-b", ""]
        else:
            target = ["-F", "qcow2", "-b", os.path.relpath(switch.backing, child.parent)]
        proc = subprocess.run(
            [qemu_img, "rebase", "-q", "-f", "qcow2", *target, str(temp)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            raise SendenseError(f"merging {point_id}: qemu-img rebase of {child} failed: {why}")
        found = qcow2_check(qemu_img, temp)
        if found is not None:
            raise SendenseError(f"merging {point_id}: the rebased {child.name} is unsound: {found}")
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        after = temp.stat().st_size
        os.replace(temp, child)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(child.parent)
    return max(after - before, 0)


def remove_leftovers(s: Session) -> list[str]:
    """What a crash left of a merge (the hub's start): temp files beside the points'
    disks, and the files of a point merged away whose rows were already gone (its
    marker says so; a marker beside a file that still has its row is a merge that
    stopped before its commit, and the point stays)."""
    notes = []
    known = {Path(q) for q in s.scalars(select(BackupDisk.qcow2_path))}
    for qcow2 in known:
        temp = temp_of(qcow2)
        if temp.exists():
            temp.unlink()
            notes.append(f"removed {temp}: left by a merge that did not finish")
    # A merged-away point's files sit beside its child's, which keeps its rows: only the
    # known disks' folders are looked in, never a walk of whole repositories at start.
    for folder in {q.parent for q in known}:
        for marker in folder.glob(f"*{MERGED_SUFFIX}"):
            qcow2 = marker.with_name(marker.name.removesuffix(MERGED_SUFFIX))
            if qcow2 not in known:
                remove_restore_point(qcow2)
                notes.append(f"removed {qcow2}: its point was merged away")
            marker.unlink(missing_ok=True)
    return notes


# -- the merge ----------------------------------------------------------------------------


def _commit(s: Session, plan: Plan) -> list[str]:
    """The rows after every disk switched: the child builds on the point's parent (or
    stands alone), the point's row goes; the child's chain."""
    point = completed_point(s, plan.point_id)
    child = completed_point(s, plan.child_id)
    for d in child.disks:
        if d.disk_key in plan.switches:
            d.parent_qcow2_path = plan.switches[d.disk_key].backing
    alone = all(d.parent_qcow2_path is None for d in child.disks)
    parent = None if alone else point.parent_backup_id
    child.parent_backup_id = parent
    if alone:
        child.backup_type = BackupType.FULL
    # Backups that failed on the point keep their history, on what the point built on.
    others = select(BackupJob).where(
        BackupJob.parent_backup_id == point.id, BackupJob.id != child.id
    )
    for other in s.scalars(others):
        other.parent_backup_id = parent
    drop_point(s, point)
    return chain_of(s, child)


class ChainMerges:
    def __init__(self, settings: Settings, merging: Merging, readers: Readers) -> None:
        self.settings = settings
        self.merging = merging
        self.readers = readers

    def merge(self, point_id: str) -> MergeResult:
        with contextlib.ExitStack() as held:
            with self.merging.lock, session_scope(self.settings.db_url) as s:
                plan = _plan(s, point_id)
                if taken := plan.points & self.merging.points:
                    raise Conflict(f"point {sorted(taken)[0]} is being merged: wait for the merge")
                self.merging.points |= plan.points
                held.callback(self._release, plan.points)
                _refuse_readers(s, plan, self.readers)
                held.enter_context(
                    self.readers.claim_vm(
                        plan.context_id, plan.vm_name, f"its chain is being merged ({point_id})"
                    )
                )
            copied = 0
            for key in sorted(plan.switches):
                copied += switch_disk(self.settings.nbd.qemu_img, point_id, plan.switches[key])
            for path in plan.files:
                marker_of(path).touch()
            with session_scope(self.settings.db_url) as s:
                chain = _commit(s, plan)
            for path in plan.files:
                remove_restore_point(path)
                marker_of(path).unlink(missing_ok=True)
        log.info("merged %s into %s (%d bytes copied)", point_id, plan.child_id, copied)
        return MergeResult(
            merged_point_id=point_id, into_point_id=plan.child_id, chain=chain, bytes_copied=copied
        )

    def _release(self, points: set[str]) -> None:
        with self.merging.lock:
            self.merging.points -= points
