"""What the console knows about jobs, kept current from the hub's event stream.

Events only change this store (cheap dict updates, however fast they come); screens
read it on a steady frame timer. Rate history is sampled on a clock, not per event, so
a sparkline shows time and not event density.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

# Anything else (pending, running, copying, verifying…) is still going: the hub may add
# intermediate states, but these three are the contract's ends.
FINISHED = frozenset({"completed", "failed", "cancelled"})
HISTORY_SECONDS = 60
JOB_HISTORY_POINTS = 3600  # an hour of the whole job's throughput, then the oldest go


def is_running(job: dict[str, Any]) -> bool:
    return str(job.get("status", "")).lower() not in FINISHED


class LiveStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.jobs: dict[str, dict[str, Any]] = {}
        self.disk_history: dict[tuple[str, int], deque[float]] = {}
        # The whole job's throughput as (seconds since first sample, bytes/s).
        self.job_history: dict[str, list[tuple[float, float]]] = {}
        self._job_t0: dict[str, float] = {}
        self.version = 0  # bumped on every change; screens redraw when it moved

    def load(self, jobs: list[dict[str, Any]]) -> None:
        """Replace the job list with the hub's (on start and after the stream reconnects)."""
        self.jobs = {job["backup_id"]: job for job in jobs}
        self.sample()
        self.version += 1

    def apply(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "job":
            old = self.jobs.get(data["backup_id"])
            if old is not None and not is_running(old) and is_running(data):
                return  # a stale event overtaken by the end: a finished job stays finished
            self.jobs[data["backup_id"]] = data
            if old is None:
                self._record(data)
        elif kind == "disk":
            self._apply_disk(data)
        else:
            return
        self.version += 1

    def _apply_disk(self, data: dict[str, Any]) -> None:
        job = self.jobs.get(data.get("job_id", ""))
        if job is None:
            return
        disks = job.setdefault("disks", [])
        disk = next((d for d in disks if d.get("disk_key") == data.get("disk_key")), None)
        if disk is None:
            disk = {"disk_key": data.get("disk_key")}
            disks.append(disk)
        for field in ("bytes_done", "bytes_total", "bytes_zero", "rate_bps", "status"):
            if field in data and data[field] is not None:
                disk[field] = data[field]
        job["bytes_done"] = sum(int(d.get("bytes_done") or 0) for d in disks)
        job["bytes_zero"] = sum(int(d.get("bytes_zero") or 0) for d in disks)
        job["rate_bps"] = sum(
            float(d.get("rate_bps") or 0) for d in disks if d.get("status") != "completed"
        )

    def sample(self) -> None:
        """Record one rate sample per running job and disk (called once a second)."""
        for job in self.jobs.values():
            if is_running(job):
                self._record(job)

    def _record(self, job: dict[str, Any]) -> None:
        job_id = job["backup_id"]
        now = self.clock()
        t0 = self._job_t0.setdefault(job_id, now)
        points = self.job_history.setdefault(job_id, [])
        points.append((now - t0, float(job.get("rate_bps") or 0)))
        del points[:-JOB_HISTORY_POINTS]
        for disk in job.get("disks") or []:
            key = (job_id, int(disk.get("disk_key") or 0))
            history = self.disk_history.setdefault(key, deque(maxlen=HISTORY_SECONDS))
            history.append(float(disk.get("rate_bps") or 0))

    def ordered(self) -> list[dict[str, Any]]:
        """Running jobs first, then history, newest first within each."""
        jobs = sorted(
            self.jobs.values(), key=lambda j: str(j.get("created_at") or ""), reverse=True
        )
        return [j for j in jobs if is_running(j)] + [j for j in jobs if not is_running(j)]

    def running_count(self) -> int:
        return sum(1 for job in self.jobs.values() if is_running(job))
