"""Requests and answers of the hub's restore API (base ``/api/v1``).

A restore point is a completed backup of one VM; its id is the backup's ``backup_id``
(``point_id`` here). Every way back reads a point through its qcow2 chain: an instant
export serves it read-only over NBD, a disk restore writes it into a standalone file on
the hub, a VM restore recreates the VM in vCenter and lets a node write its disks. The
last two are restore jobs, with per-disk progress like a backup's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from engine.contract.fields import Count, Name, PathText, RateMiB
from engine.contract.hub import ByteCounters, DiskCounters
from engine.contract.progress import DiskKey
from engine.contract.status import (
    BackupType,
    DiskFormat,
    JobStatus,
    RestoreKind,
    SnapshotKind,
    Verification,
)

PointId = Annotated[str, StringConstraints(min_length=1, max_length=191)]
# Instant exports live from a minute to a week; four hours unless asked otherwise.
TTL_MIN_SECONDS = 60
TTL_MAX_SECONDS = 7 * 24 * 3600
TTL_DEFAULT_SECONDS = 4 * 3600
TtlSeconds = Annotated[int, Field(ge=TTL_MIN_SECONDS, le=TTL_MAX_SECONDS)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- restore points ---------------------------------------------------------------------


class RestorePointDisk(BaseModel):
    disk_key: DiskKey
    capacity_bytes: Count
    qcow2_path: str
    # The file on disk (this point's own qcow2, not its chain); None when unreadable.
    qcow2_size_bytes: int | None = None
    # The qcow2 this one is an overlay on (an incremental's parent); None for a full.
    parent_qcow2_path: str | None = None
    change_id: str | None = None


class RestorePoint(BaseModel):
    point_id: str  # the backup_id of the completed backup
    vm_name: str
    vm_context_id: str
    vm_path: str | None
    backup_type: BackupType
    snapshot_kind: SnapshotKind | None
    created_at: datetime | None
    completed_at: datetime | None
    repository_id: int
    repository_name: str | None = None
    node_id: int | None
    node_name: str | None = None
    parent_point_id: str | None = None
    # Point ids from the chain's full backup to this point (a full: just itself).
    chain: list[str] = Field(default_factory=list)
    bytes_total: Count = 0  # the disks' capacity
    size_bytes: Count = 0  # what this point's own qcow2 files take
    verification: Verification = Verification.UNVERIFIED
    verification_detail: str | None = None  # where a damaged point is damaged
    # Whether the VM's configuration was recorded (a whole-VM restore needs it).
    has_config: bool = False
    exports: list[str] = Field(default_factory=list)  # names of its live instant exports
    disks: list[RestorePointDisk] = Field(default_factory=list)


class RestorePointQuery(BaseModel):
    """``vm`` is a VM's name or its inventory path."""

    vm: PathText | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 200


# ---- instant access ---------------------------------------------------------------------


class ExportRequest(_In):
    disk_key: DiskKey
    ttl_seconds: TtlSeconds = TTL_DEFAULT_SECONDS


class RestoreExport(BaseModel):
    """A read-only qemu-nbd export of one disk of a point, through its chain."""

    name: str
    point_id: str
    vm_name: str
    disk_key: int
    host: str
    port: int
    uri: str  # nbd://host:port/name
    pid: int | None = None
    created_at: datetime | None
    expires_at: datetime


# ---- restore jobs -----------------------------------------------------------------------


class DiskRestoreRequest(_In):
    """One disk of a point into a standalone image at ``path`` on the hub's machine."""

    point_id: PointId
    disk_key: DiskKey
    path: PathText
    format: DiskFormat = DiskFormat.RAW
    force: bool = False  # replace an existing file (only once the new one is whole)
    # Limit the copy to this many MiB/s (the hub's own disks serve backups meanwhile).
    max_rate_mib: RateMiB | None = None


class VMRestoreRequest(_In):
    """A point's VM recreated in vCenter as ``name``; placement defaults to where the VM
    lived. ``overwrite`` names the original VM again to replace it (never the default)."""

    point_id: PointId
    name: Name | None = None
    folder: PathText | None = None
    datastore: Name | None = None
    pool: PathText | None = None
    power_on: bool = False
    overwrite: Name | None = None
    # Limit each disk's copy to this many MiB/s (spare a busy datastore).
    max_rate_mib: RateMiB | None = None


class RestoreJobDisk(DiskCounters):
    source_path: str  # the point's qcow2 the disk is read from
    target: str | None = None  # the file, or the new VM's disk file ("[ds] vm/vm.vmdk")
    export_name: str | None = None  # the read-only export a node reads, while it runs
    error_message: str | None = None


class RestoreJob(ByteCounters):
    restore_id: str
    kind: RestoreKind
    point_id: str
    vm_name: str  # the VM of the point
    target: str  # the file a disk restore writes, or the restored VM's name
    status: JobStatus
    node_id: int | None = None
    vm_path: str | None = None  # the restored VM's inventory path, once created
    format: DiskFormat | None = None
    power_on: bool = False
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None = None
    disks: list[RestoreJobDisk] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status.finished


class RestoreQuery(BaseModel):
    point_id: PointId | None = None
    status: JobStatus | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


# ---- chains -----------------------------------------------------------------------------


class MergeResult(BaseModel):
    """``POST /restore-points/{point_id}/merge``: the point folded into its child. The
    child reads exactly as before; it now builds on the merged point's parent (or stands
    alone, a synthetic full, when the merged point was the chain's full)."""

    merged_point_id: str
    into_point_id: str
    chain: list[str] = Field(default_factory=list)  # the child's chain after the merge
    bytes_copied: Count = 0
