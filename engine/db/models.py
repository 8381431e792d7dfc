"""The tables. Names and columns follow the original system where it named them, so that
its operators' queries (``SELECT context_id, vm_name, vcenter_host, credential_id FROM
vm_replication_contexts WHERE vm_name = 'pgtest1'``) still run."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from engine import clock


def utcnow() -> datetime:
    """The hub's clock (engine.clock): real time, or a test's."""
    return clock.utcnow()


class Base(DeclarativeBase):
    # Named constraints keep Alembic migrations portable between SQLite and MariaDB.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class VMwareCredential(Base):
    """A vCenter login. Only ciphertext of the password is stored (see credentials.py)."""

    __tablename__ = "vmware_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credential_name: Mapped[str] = mapped_column(String(255), unique=True)
    vcenter_host: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(255))
    # nonce (12 bytes) || AES-256-GCM ciphertext+tag; associated data binds it to this row.
    password_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # Which master key sealed it, so a wrong key file is named instead of failing obscurely.
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    thumbprint: Mapped[str | None] = mapped_column(String(95))
    datacenter: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class VMReplicationContext(Base):
    """One VM known to Sendense; ``context_id`` is ``ctx-<vm>-<YYYYMMDD-HHMMSS>``."""

    __tablename__ = "vm_replication_contexts"

    context_id: Mapped[str] = mapped_column(String(191), primary_key=True)
    vm_name: Mapped[str] = mapped_column(String(255), index=True)
    vmware_vm_id: Mapped[str] = mapped_column(String(255))
    vm_path: Mapped[str] = mapped_column(String(1024))
    vcenter_host: Mapped[str] = mapped_column(String(255))
    datacenter: Mapped[str] = mapped_column(String(255))
    credential_id: Mapped[int | None] = mapped_column(
        ForeignKey("vmware_credentials.id", ondelete="SET NULL"), nullable=True
    )
    power_state: Mapped[str | None] = mapped_column(String(32))
    cpu_count: Mapped[int | None] = mapped_column(Integer)
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    guest_os: Mapped[str | None] = mapped_column(String(255))
    cbt_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The ESXi host it runs on (moref), as of the last refresh: the queue's per-host limit.
    esxi_host: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    disks: Mapped[list[VMDisk]] = relationship(
        back_populates="context", cascade="all, delete-orphan", order_by="VMDisk.disk_key"
    )


class VMDisk(Base):
    """A virtual disk of a VM, keyed by its VMware device key (2000, 2001, ...)."""

    __tablename__ = "vm_disks"
    __table_args__ = (UniqueConstraint("vm_context_id", "disk_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_context_id: Mapped[str] = mapped_column(
        ForeignKey("vm_replication_contexts.context_id", ondelete="CASCADE")
    )
    disk_key: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(255))
    capacity_bytes: Mapped[int] = mapped_column(BigInteger)
    datastore: Mapped[str | None] = mapped_column(String(255))
    vmdk_path: Mapped[str | None] = mapped_column(String(1024))
    controller_key: Mapped[int | None] = mapped_column(Integer)
    unit_number: Mapped[int | None] = mapped_column(Integer)
    # The change id of the newest good restore point; the base of the next incremental.
    change_id: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    context: Mapped[VMReplicationContext] = relationship(back_populates="disks")


class BackupRepository(Base):
    __tablename__ = "backup_repositories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(191), unique=True)
    repository_type: Mapped[str] = mapped_column(String(32), default="local")
    path: Mapped[str] = mapped_column(String(1024))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Node(Base):
    """A backup node (SNA) that reads VMware disks and writes into the hub's exports."""

    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(191), unique=True)
    url: Mapped[str] = mapped_column(String(1024))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The vCenter hosts it may serve, as a JSON list; NULL or [] serves every vCenter.
    vcenters: Mapped[str | None] = mapped_column(Text)
    # Its capacity; NULL takes the [queue] settings' per-node limits.
    max_jobs: Mapped[int | None] = mapped_column(Integer)
    max_disks: Mapped[int | None] = mapped_column(Integer)


class BackupJob(Base):
    """One backup of one VM: a restore point. ``parent_backup_id`` links an incremental to the
    restore point it builds on, so chains are explicit from the first full backup on."""

    __tablename__ = "backup_jobs"
    # The queue read in its order, and job lists newest first, without a sort of history.
    __table_args__ = (
        Index("ix_backup_jobs_status_queue_order", "status", "queue_order"),
        Index("ix_backup_jobs_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(191), primary_key=True)  # backup-<vm>-<unix seconds>
    vm_context_id: Mapped[str] = mapped_column(
        ForeignKey("vm_replication_contexts.context_id", ondelete="CASCADE"), index=True
    )
    vm_name: Mapped[str] = mapped_column(String(255), index=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("backup_repositories.id"))
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    parent_backup_id: Mapped[str | None] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="RESTRICT"), nullable=True
    )
    backup_type: Mapped[str] = mapped_column(String(32), default="full")
    # What was asked (full, incremental or auto); ``backup_type`` is what the job does.
    requested_type: Mapped[str | None] = mapped_column(String(16))
    # [queued ->] pending -> running -> completed | failed | cancelled
    status: Mapped[str] = mapped_column(String(32), default="pending", index=True)
    # A queued job's place: lower goes first (nanoseconds at enqueue); kept after dispatch.
    queue_order: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # A queued job's per-disk rate limit (MiB/s), kept until its start asks the node.
    max_rate_mib: Mapped[float | None] = mapped_column(Float)
    # The policy run that queued it; NULL for a backup asked for by hand.
    policy_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("policy_runs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    snapshot_kind: Mapped[str | None] = mapped_column(String(32))  # quiesced | crash-consistent
    bytes_transferred: Mapped[int] = mapped_column(BigInteger, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # unverified | verified | damaged; the detail says where a damaged point is damaged.
    verification: Mapped[str] = mapped_column(String(16), default="unverified")
    verification_detail: Mapped[str | None] = mapped_column(Text)
    # The VM's configuration as of the snapshot (contract.vmconfig.VMConfig as JSON):
    # what a whole-VM restore recreates the VM from.
    vm_config: Mapped[str | None] = mapped_column(Text)

    disks: Mapped[list[BackupDisk]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="BackupDisk.disk_key"
    )


class BackupDisk(Base):
    """One disk of one backup: its qcow2 file, its export while running, its progress."""

    __tablename__ = "backup_disks"
    __table_args__ = (UniqueConstraint("backup_job_id", "disk_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_job_id: Mapped[str] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="CASCADE"), index=True
    )
    disk_key: Mapped[int] = mapped_column(Integer)
    nbd_export_name: Mapped[str] = mapped_column(String(255))
    nbd_port: Mapped[int | None] = mapped_column(Integer)
    qcow2_path: Mapped[str] = mapped_column(String(1024))
    # The restore point this qcow2 is an overlay on (incrementals); NULL for a full.
    parent_qcow2_path: Mapped[str | None] = mapped_column(String(1024))
    qemu_nbd_pid: Mapped[int | None] = mapped_column(Integer)
    # full | incremental: how this disk was copied, and why a disk that could have been
    # an incremental was copied whole.
    backup_mode: Mapped[str] = mapped_column(String(16), default="full")
    fallback_reason: Mapped[str | None] = mapped_column(Text)
    capacity_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes_total: the copy's
    status: Mapped[str] = mapped_column(String(32), default="pending")
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_zero: Mapped[int] = mapped_column(BigInteger, default=0)
    qcow2_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    change_id: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)

    job: Mapped[BackupJob] = relationship(back_populates="disks")


class RestoreJob(Base):
    """One restore of a restore point: a disk into a file on the hub (``disk``) or the
    whole VM into vCenter (``vm``). The point cannot be deleted while one runs."""

    __tablename__ = "restore_jobs"

    id: Mapped[str] = mapped_column(String(191), primary_key=True)  # restore-<vm>-<unix s>
    kind: Mapped[str] = mapped_column(String(16))  # disk | vm
    backup_job_id: Mapped[str] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="RESTRICT"), index=True
    )
    vm_name: Mapped[str] = mapped_column(String(255))  # the point's VM
    target: Mapped[str] = mapped_column(String(1024))  # the file, or the new VM's name
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(32), default="pending", index=True)
    # The request as given (contract.restore.*Request as JSON), for a restart's decisions.
    request: Mapped[str] = mapped_column(Text)
    # The VM a vm restore created (moref, inventory path): what a failure must remove.
    vm_moref: Mapped[str | None] = mapped_column(String(255))
    vm_path: Mapped[str | None] = mapped_column(String(1024))
    bytes_transferred: Mapped[int] = mapped_column(BigInteger, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)

    disks: Mapped[list[RestoreDisk]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="RestoreDisk.disk_key"
    )


class RestoreDisk(Base):
    """One disk of a restore job: read from the point's qcow2, written to ``target``."""

    __tablename__ = "restore_disks"
    __table_args__ = (UniqueConstraint("restore_job_id", "disk_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    restore_job_id: Mapped[str] = mapped_column(
        ForeignKey("restore_jobs.id", ondelete="CASCADE"), index=True
    )
    # The key of the disk written (the new VM's key for a vm restore) and of the point's
    # disk it is read from.
    disk_key: Mapped[int] = mapped_column(Integer)
    source_disk_key: Mapped[int] = mapped_column(Integer)
    source_path: Mapped[str] = mapped_column(String(1024))
    target: Mapped[str | None] = mapped_column(String(1024))
    export_name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default="pending")
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_zero: Mapped[int] = mapped_column(BigInteger, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)

    job: Mapped[RestoreJob] = relationship(back_populates="disks")


class RestoreExport(Base):
    """An instant-access export of one disk of a restore point: read-only, until
    ``expires_at``. Its qemu-nbd is the export manager's; this row is its lease."""

    __tablename__ = "restore_exports"

    name: Mapped[str] = mapped_column(String(191), primary_key=True)
    backup_job_id: Mapped[str] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="RESTRICT"), index=True
    )
    disk_key: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class BackupPolicy(Base):
    """A policy: which VMs (inventory paths, resolved at each run), where, when, and what
    to keep. ``last_scheduled_for`` is the schedule's time of the last run fired (or
    missed): the scheduler's memory, so that no run fires twice, across restarts too."""

    __tablename__ = "backup_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(191), unique=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("backup_repositories.id"))
    schedule: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    includes: Mapped[str] = mapped_column(Text)  # JSON list of inventory paths
    excludes: Mapped[str] = mapped_column(Text, default="[]")
    backup_type: Mapped[str] = mapped_column(String(16), default="auto")
    keep_last: Mapped[int | None] = mapped_column(Integer)
    keep_daily: Mapped[int | None] = mapped_column(Integer)
    keep_weekly: Mapped[int | None] = mapped_column(Integer)
    keep_monthly: Mapped[int | None] = mapped_column(Integer)
    keep_yearly: Mapped[int | None] = mapped_column(Integer)
    # The Apprise URLs, sealed with the master key (they hold tokens and passwords).
    notify_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    notify_on_success: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_scheduled_for: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class PolicyRun(Base):
    """One run of a policy. Its VMs are the jobs that point at it, plus ``skipped``: the
    VMs it could not queue, with why (JSON list of {vm_name, vm_path, error})."""

    __tablename__ = "policy_runs"
    __table_args__ = (UniqueConstraint("policy_id", "scheduled_for"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(
        ForeignKey("backup_policies.id", ondelete="CASCADE"), index=True
    )
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | manual | catch-up
    # The schedule's time it is for; NULL for a manual run. Unique per policy: the
    # database itself refuses a second run for one scheduled time.
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    skipped: Mapped[str] = mapped_column(Text, default="[]")
    retention: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of lines
    notify_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
