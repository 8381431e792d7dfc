"""What the console knows about jobs (backups and restores), kept current from the
hub's event stream.

Events only change this store (cheap field updates, however fast they come); screens
read it on a steady frame timer. Rate history is sampled on a clock, not per event, so
a sparkline shows time and not event density. Histories are keyed by job id: backup
ids (``backup-…``) and restore ids (``restore-…``) never meet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from engine.contract.hub import ByteCounters, DiskCounters, DiskEvent, Job, JobDisk
from engine.contract.restore import RestoreJob
from engine.contract.status import DiskStatus, JobStatus

HISTORY_SECONDS = 60
JOB_HISTORY_POINTS = 3600  # an hour of the whole job's throughput, then the oldest go
DISK_ENDS = frozenset({DiskStatus.COMPLETED, DiskStatus.FAILED, DiskStatus.CANCELLED})


def disk_running(disk: DiskCounters) -> bool:
    return disk.status not in DISK_ENDS


class LiveStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.restores: dict[str, RestoreJob] = {}
        self.disk_history: dict[tuple[str, int], deque[float]] = {}
        # The whole job's throughput as (seconds since first sample, bytes/s).
        self.job_history: dict[str, list[tuple[float, float]]] = {}
        self._job_t0: dict[str, float] = {}
        self.version = 0  # bumped on every change; screens redraw when it moved

    def load(self, jobs: list[Job]) -> None:
        """Replace the job list with the hub's (on start and after the stream reconnects)."""
        self.jobs = {job.backup_id: job for job in jobs}
        self._sample_jobs()
        self.version += 1

    def load_restores(self, restores: list[RestoreJob]) -> None:
        """Replace the restore list with the hub's (on start and after a reconnect)."""
        self.restores = {r.restore_id: r for r in restores}
        self._sample_restores()
        self.version += 1

    def apply(self, event: Job | DiskEvent | RestoreJob) -> None:
        if isinstance(event, RestoreJob):
            old_restore = self.restores.get(event.restore_id)
            if old_restore is not None and old_restore.finished and not event.finished:
                return
            self.restores[event.restore_id] = event
            if old_restore is None:
                self._record(event.restore_id, event, event.disks)
        elif isinstance(event, DiskEvent):
            if not self._apply_disk(event):
                return
        else:
            old = self.jobs.get(event.backup_id)
            if old is not None and old.finished and not event.finished:
                return  # a stale event overtaken by the end: a finished job stays finished
            self.jobs[event.backup_id] = event
            if old is None:
                self._record(event.backup_id, event, event.disks)
        self.version += 1

    def _apply_disk(self, event: DiskEvent) -> bool:
        """The event's numbers into its job's disk; False for a job this store lacks."""
        job = self.jobs.get(event.backup_id)
        if job is None:
            return False
        numbers = event.model_dump(exclude={"backup_id"})
        at = next((i for i, d in enumerate(job.disks) if d.disk_key == event.disk_key), None)
        if at is None:  # not in the job as it was listed: shown all the same
            job.disks.append(JobDisk(nbd_port=None, nbd_export_name="", qcow2_path="", **numbers))
        else:
            job.disks[at] = job.disks[at].model_copy(update=numbers)
        job.bytes_done = sum(d.bytes_done for d in job.disks)
        job.bytes_zero = sum(d.bytes_zero for d in job.disks)
        job.rate_bps = sum(d.rate_bps for d in job.disks if d.status is not DiskStatus.COMPLETED)
        return True

    def sample(self) -> None:
        """Record one rate sample per running job and disk (called once a second)."""
        self._sample_jobs()
        self._sample_restores()

    def _sample_jobs(self) -> None:
        for job in self.jobs.values():
            if not job.finished:
                self._record(job.backup_id, job, job.disks)

    def _sample_restores(self) -> None:
        for restore in self.restores.values():
            if not restore.finished:
                self._record(restore.restore_id, restore, restore.disks)

    def _record(self, job_id: str, job: ByteCounters, disks: Sequence[DiskCounters]) -> None:
        now = self.clock()
        t0 = self._job_t0.setdefault(job_id, now)
        points = self.job_history.setdefault(job_id, [])
        points.append((now - t0, job.rate_bps))
        del points[:-JOB_HISTORY_POINTS]
        for disk in disks:
            key = (job_id, disk.disk_key)
            history = self.disk_history.setdefault(key, deque(maxlen=HISTORY_SECONDS))
            history.append(disk.rate_bps)

    def ordered(self) -> list[Job]:
        """Running jobs, then the queue in its order, then history."""
        jobs = _running_first(self.jobs.values())
        queued = sorted(
            (j for j in jobs if j.status is JobStatus.QUEUED),
            key=lambda j: j.queue_position or 0,
        )
        return [j for j in jobs if _running(j)] + queued + [j for j in jobs if j.finished]

    def ordered_restores(self) -> list[RestoreJob]:
        return _running_first(self.restores.values())

    def running_count(self) -> int:
        """Backups and restores: both are jobs the hub is running (a queued one is not yet)."""
        jobs = sum(1 for job in self.jobs.values() if _running(job))
        return jobs + sum(1 for restore in self.restores.values() if not restore.finished)

    def queued_count(self) -> int:
        return sum(1 for job in self.jobs.values() if job.status is JobStatus.QUEUED)


J = TypeVar("J", Job, RestoreJob)


def _running_first(jobs: Iterable[J]) -> list[J]:
    """Running jobs first, then history, newest first within each."""
    ordered = sorted(jobs, key=_created, reverse=True)
    return [j for j in ordered if not j.finished] + [j for j in ordered if j.finished]


def _running(job: Job) -> bool:
    return not job.finished and job.status is not JobStatus.QUEUED


def _created(job: Job | RestoreJob) -> float:
    return job.created_at.timestamp() if job.created_at else 0.0
