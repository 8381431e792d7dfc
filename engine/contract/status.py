"""States as enums: a status is one of these words, never a bare string compared by hand."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class JobStatus(StrEnum):
    """A backup job: ``pending`` → ``running`` → ``completed`` | ``failed`` | ``cancelled``;
    a job from the queue is ``queued`` first (no node, no files), and ``cancelled`` when
    cancelled there."""

    QUEUED = "queued"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_JOB


FINISHED_JOB = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_JOB = frozenset({JobStatus.PENDING, JobStatus.RUNNING})
# A VM with a job in one of these has a backup coming or going: it is never queued twice.
OPEN_JOB = ACTIVE_JOB | {JobStatus.QUEUED}


class DiskStatus(StrEnum):
    """One disk of a job: ``qemu_started`` → ``copying`` → ``copied`` → ``completed``; on a
    failed or cancelled job every disk takes the job's status."""

    QEMU_STARTED = "qemu_started"
    COPYING = "copying"
    COPIED = "copied"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BackupType(StrEnum):
    """A full copies every allocated block; an incremental only what changed (CBT) since
    its parent point. ``auto`` is asked for only: incremental when the VM has a usable
    chain, full otherwise; a job, a point and a disk are ``full`` or ``incremental``."""

    FULL = "full"
    INCREMENTAL = "incremental"
    AUTO = "auto"


class SnapshotKind(StrEnum):
    """Quiesced (the guest flushed its file systems) unless the request allowed the
    crash-consistent fallback and quiescing failed."""

    QUIESCED = "quiesced"
    CRASH_CONSISTENT = "crash-consistent"


class NodeJobState(StrEnum):
    """A job on a node: its client ``running``, ``exited`` (the exit line not yet delivered
    to the hub), ``finished`` (delivered)."""

    RUNNING = "running"
    EXITED = "exited"
    FINISHED = "finished"


# The ``status`` of the client's ``done`` line: how the client itself ended, in the
# words of a finished job.
ClientOutcome = Literal[JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]


class NodeState(StrEnum):
    """Whether a node answered the hub's health check just now."""

    UP = "up"
    DOWN = "down"


class TunnelState(StrEnum):
    """A node's SSH tunnel, as its status file says; ``stopped`` is an orderly end."""

    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    STOPPED = "stopped"


class Verification(StrEnum):
    """What is known of a restore point's bytes: not yet checked, checked whole, or found
    damaged (the point's ``verification_detail`` says where)."""

    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    DAMAGED = "damaged"


class RestoreKind(StrEnum):
    """A restore job writes one disk into a file on the hub, or a whole VM into vCenter."""

    DISK = "disk"
    VM = "vm"


class DiskFormat(StrEnum):
    """What ``restore disk`` writes: a raw image, a standalone qcow2, or a streamOptimized
    VMDK that vSphere imports."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"


class PolicyRunStatus(StrEnum):
    """One run of a policy: ``running`` until every VM's job ended, then ``completed``
    (every VM's backup completed) or ``failed`` (any did not, or the run could not start:
    an include path gone, vCenter down); ``missed`` when the hub was down past the grace
    window at its time; ``cancelled`` when every queued job of it was cancelled."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    MISSED = "missed"
    CANCELLED = "cancelled"


class RunTrigger(StrEnum):
    """Why a policy run happened: its schedule, an operator (``policy run``), or a run the
    hub missed while down and ran once when it came back within the grace window."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    CATCH_UP = "catch-up"
