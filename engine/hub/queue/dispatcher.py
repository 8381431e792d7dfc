"""The hub's dispatch round: the queue read from the database, ``dispatch.assign``'s
decision, and each assigned job started on its node (``JobManager.start_queued``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.config import Settings
from engine.contract.hub import BackupRequest, Job, QueueRequest
from engine.hub.fleet import NodeWatch
from engine.hub.jobs import JobManager


@dataclass
class Enqueued:
    """What an enqueue did: the jobs queued, and the requests left out with why (a
    policy run skips a VM that has a job queued or running already)."""

    jobs: list[Job] = field(default_factory=list)
    skipped: list[tuple[BackupRequest, str]] = field(default_factory=list)


class Dispatcher:
    def __init__(self, settings: Settings, jobs: JobManager, fleet: NodeWatch) -> None:
        self.settings = settings
        self.jobs = jobs
        self.fleet = fleet

    def queue(self, request: QueueRequest) -> list[Job]:
        """``POST /backups/queue``: all or nothing; a VM queued or running is a 409."""
        raise NotImplementedError

    def enqueue(
        self,
        requests: Sequence[BackupRequest],
        *,
        policy_run_id: int | None = None,
        skip_busy: bool = False,
    ) -> Enqueued:
        """Queue one job per request (in order); with ``skip_busy`` a VM that has a job
        queued or running is skipped with the reason instead of refusing them all."""
        raise NotImplementedError

    def round(self) -> int:
        """Start what fits now; the number of jobs started."""
        raise NotImplementedError
