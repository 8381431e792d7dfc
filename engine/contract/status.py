"""States as enums: a status is one of these words, never a bare string compared by hand."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A backup job: ``pending`` → ``running`` → ``completed`` | ``failed`` | ``cancelled``."""

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
    FULL = "full"
    INCREMENTAL = "incremental"


class SnapshotKind(StrEnum):
    QUIESCED = "quiesced"
    CRASH_CONSISTENT = "crash-consistent"


class NodeJobState(StrEnum):
    """A job on a node: its client ``running``, ``exited`` (the exit line not yet delivered
    to the hub), ``finished`` (delivered)."""

    RUNNING = "running"
    EXITED = "exited"
    FINISHED = "finished"


class ClientOutcome(StrEnum):
    """The ``status`` of the client's ``done`` line."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeState(StrEnum):
    UP = "up"
    DOWN = "down"


class TunnelState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    STOPPED = "stopped"
