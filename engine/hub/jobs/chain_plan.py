"""Whether a backup is a full or an incremental, disk by disk, and why.

One decision serves ``POST /backups`` and ``POST /backups/preview``. ``auto`` and
``incremental`` differ only in what was asked: both build on the VM's newest usable point
when they can, and copy a disk whole, with the reason, when they cannot (an incremental
that cannot be done is never refused). The reasons found here are the hub's; the client
may still copy a disk whole when vCenter no longer knows its change id (``DiskStarted.
fallback``), which is only found once the snapshot exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.hub import BackupPreview, DiskPreview
from engine.contract.status import BackupType, JobStatus, Verification
from engine.db.models import BackupDisk, BackupJob, VMReplicationContext
from engine.hub.exports.images import image_size
from engine.hub.verify.table import TableError, read_table, table_path

KiB, MiB, GiB = 1024, 1024**2, 1024**3


@dataclass(frozen=True)
class DiskDecision:
    disk_key: int
    capacity_bytes: int
    mode: BackupType  # FULL or INCREMENTAL
    reason: str | None = None
    parent_qcow2_path: Path | None = None
    parent_change_id: str | None = None


@dataclass(frozen=True)
class ChainDecision:
    requested: BackupType
    disks: tuple[DiskDecision, ...]
    parent_backup_id: str | None = None  # set only when some disk is incremental
    reason: str | None = None  # why the whole job is a full

    @property
    def backup_type(self) -> BackupType:
        incremental = any(d.mode == BackupType.INCREMENTAL for d in self.disks)
        return BackupType.INCREMENTAL if incremental else BackupType.FULL

    @property
    def changed_since(self) -> dict[int, str]:
        """The node's ``StartRequest.changed_since``."""
        return {
            d.disk_key: d.parent_change_id
            for d in self.disks
            if d.mode == BackupType.INCREMENTAL and d.parent_change_id
        }

    @property
    def full_reasons(self) -> dict[int, str]:
        """The node's ``StartRequest.full_reasons``: why each disk is copied whole where
        an incremental was asked for, for the job's log."""
        return {d.disk_key: d.reason for d in self.disks if d.mode == BackupType.FULL and d.reason}

    def preview(self, ctx: VMReplicationContext) -> BackupPreview:
        return BackupPreview(
            vm_name=ctx.vm_name,
            vm_context_id=ctx.context_id,
            requested_type=self.requested,
            backup_type=self.backup_type,
            parent_backup_id=self.parent_backup_id,
            reason=self.reason,
            cbt_enabled=bool(ctx.cbt_enabled),
            disks=[
                DiskPreview(
                    disk_key=d.disk_key,
                    capacity_bytes=d.capacity_bytes,
                    mode=d.mode,
                    reason=d.reason,
                    parent_qcow2_path=str(d.parent_qcow2_path) if d.parent_qcow2_path else None,
                )
                for d in self.disks
            ],
        )


def size_text(n: int) -> str:
    if n and n % GiB == 0:
        return f"{n // GiB} GiB"
    if n and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} bytes"


def candidate_points(s: Session, context_id: str) -> list[BackupJob]:
    """The context's completed points, newest first."""
    return list(
        s.scalars(
            select(BackupJob)
            .where(BackupJob.vm_context_id == context_id, BackupJob.status == JobStatus.COMPLETED)
            .order_by(BackupJob.completed_at.desc(), BackupJob.created_at.desc())
        )
    )


def _chain_gone(s: Session, disk: BackupDisk) -> bool:
    """Whether the disk's qcow2 or any file below it in its chain is gone: an overlay on a
    lost file cannot be read, nor built on (qemu-img create opens the whole chain)."""
    seen: set[str] = set()
    path: str | None = disk.qcow2_path
    while path and path not in seen:
        seen.add(path)
        if not Path(path).is_file():
            return True
        row = s.scalar(select(BackupDisk).where(BackupDisk.qcow2_path == path))
        path = row.parent_qcow2_path if row is not None else None
    return False


def _unusable(s: Session, point: BackupJob, repository_id: int) -> str | None:
    """Why a completed point cannot be a parent in ``repository_id``; None when it can."""
    if point.repository_id != repository_id:
        return (
            f"the last point {point.id} is in repository {point.repository_id}, "
            f"not {repository_id}: full copy"
        )
    if point.verification == Verification.DAMAGED:
        return f"the last point {point.id} is damaged (verify found it so): full copy"
    gone = [d.disk_key for d in point.disks if _chain_gone(s, d)]
    if gone or not point.disks:
        named = ", ".join(map(str, gone)) or "all"
        return f"the files of the last point {point.id} are gone (disk {named}): full copy"
    return None


def find_parent(s: Session, context_id: str, repository_id: int) -> tuple[BackupJob | None, str]:
    """The newest usable point, or None and why there is none (the newest rejected point
    of the same repository says it, else the newest of another)."""
    points = candidate_points(s, context_id)
    if not points:
        return None, "no restore point of this VM yet: full copy"
    reasons: list[tuple[bool, str]] = []
    for point in points:
        why = _unusable(s, point, repository_id)
        if why is None:
            return point, ""
        reasons.append((point.repository_id == repository_id, why))
    same_repo = [why for same, why in reasons if same]
    return None, (same_repo or [why for _, why in reasons])[0]


def _table_problem(qcow2: Path, chunk_size: int) -> str | None:
    """Why a parent disk's digest table cannot be derived (``derive``): a point from
    before digests has none, and one in other chunks than the copier's would take no
    digest of this copy. A table that covered only the copied chunks could not verify
    the point, so such a disk is copied whole instead (once: its table is then whole)."""
    try:
        header = read_table(table_path(qcow2)).header
    except (OSError, TableError):
        return "has no digest table to build on (a point from before digests)"
    if header.chunk_size != chunk_size:
        return (
            f"has digests of {size_text(header.chunk_size)} chunks, "
            f"the copier takes {size_text(chunk_size)} ones"
        )
    return None


def _disk_reason(
    key: int, capacity: int, parent: BackupJob, parent_disk_capacity: int | None, chain: str
) -> str | None:
    if parent_disk_capacity is None:
        return f"disk {key} was added since {parent.id}: full copy"
    if parent_disk_capacity != capacity:
        moved = "grew" if capacity > parent_disk_capacity else "shrank"
        return (
            f"disk {key} {moved} from {size_text(parent_disk_capacity)} to "
            f"{size_text(capacity)} since {parent.id}: full copy"
        )
    return chain or None


def decide(
    s: Session,
    ctx: VMReplicationContext,
    repository_id: int,
    requested: BackupType,
    chunk_size: int,
) -> ChainDecision:
    """The plan of every disk of the context as its rows say now (``plan.refresh_for_chain``
    reads them from vCenter first); ``chunk_size`` is the copier's digest chunk."""
    disks = [(d.disk_key, d.capacity_bytes) for d in ctx.disks]

    def all_full(reason: str | None) -> ChainDecision:
        return ChainDecision(
            requested=requested,
            reason=reason,
            disks=tuple(DiskDecision(k, c, BackupType.FULL, reason) for k, c in disks),
        )

    if requested == BackupType.FULL:
        return all_full(None)
    if not ctx.cbt_enabled:
        return all_full(f"CBT is off on {ctx.vm_name}: sendense vm enable-cbt {ctx.vm_path}")
    parent, why = find_parent(s, ctx.context_id, repository_id)
    if parent is None:
        return all_full(why)
    by_key = {d.disk_key: d for d in parent.disks}
    decided = []
    for key, capacity in disks:
        pd = by_key.get(key)
        pd_capacity = (pd.capacity_bytes or image_size(Path(pd.qcow2_path))) if pd else None
        reason = _disk_reason(key, capacity, parent, pd_capacity, "")
        if reason is None and pd is not None and not pd.change_id:
            reason = f"disk {key} of {parent.id} has no change id: full copy"
        table = _table_problem(Path(pd.qcow2_path), chunk_size) if pd and not reason else None
        if table is not None:
            reason = f"disk {key} of {parent.id} {table}: full copy, so this point can be verified"
        if reason is not None or pd is None:
            decided.append(DiskDecision(key, capacity, BackupType.FULL, reason))
        else:
            decided.append(
                DiskDecision(
                    key,
                    capacity,
                    BackupType.INCREMENTAL,
                    parent_qcow2_path=Path(pd.qcow2_path),
                    parent_change_id=pd.change_id,
                )
            )
    incremental = any(d.mode == BackupType.INCREMENTAL for d in decided)
    return ChainDecision(
        requested=requested,
        disks=tuple(decided),
        parent_backup_id=parent.id if incremental else None,
        reason=None if incremental else f"no disk can build on {parent.id}: full copy",
    )
