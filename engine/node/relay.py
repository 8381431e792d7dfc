"""Deliver a job's progress lines to the hub, in batches, through whatever outage.

When the hub cannot be reached (a tunnel reconnecting) the lines wait, and ``progress``
lines a later one of the same disk supersedes are dropped, so the backlog stays small
and the hub gets the newest numbers first. A job is ``finished`` once the hub has its
``exit`` line.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from engine.api.auth import auth_headers
from engine.contract.progress import ClientExit, DiskProgress, ProgressBatch, ProgressLine
from engine.contract.status import NodeJobState
from engine.node.job import ClientJob

log = logging.getLogger("sendense.node")

BATCH_LIMIT = 500
BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0
# How long an undelivered final report is kept trying before the node gives up on it.
GIVE_UP_SECONDS = 3600.0
# Answers that say "try again later"; any other error answer drops the batch.
_RETRY_STATUSES = frozenset({408, 429})


def coalesce(lines: list[ProgressLine]) -> list[ProgressLine]:
    """Drop ``progress`` lines a later ``progress`` line of the same disk supersedes."""
    latest = {line.disk_key: i for i, line in enumerate(lines) if isinstance(line, DiskProgress)}
    return [
        line
        for i, line in enumerate(lines)
        if not isinstance(line, DiskProgress) or latest[line.disk_key] == i
    ]


class Relay:
    """The node's one connection to its hub, for every job's lines."""

    def __init__(self, hub_url: str, token: str) -> None:
        self._hub_url = hub_url.rstrip("/")
        self._token = token
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self._hub_url,
                headers={**auth_headers(self._token), "Content-Type": "application/json"},
                timeout=httpx.Timeout(10.0, connect=3.0),
            )
        return self._http

    async def deliver(self, job: ClientJob) -> None:
        """Send the job's outbox to the hub until its ``exit`` line is through."""
        backoff = BACKOFF_MIN
        while True:
            await job.wake.wait()
            job.wake.clear()
            while job.outbox:
                sent = len(job.outbox[:BATCH_LIMIT])
                batch = coalesce(job.outbox[:sent])
                body = ProgressBatch(events=batch).model_dump_json()
                try:
                    response = await self.http.post(job.events_path, content=body)
                except httpx.HTTPError as exc:
                    log.warning("job %s: hub unreachable (%s); retrying", job.job_id, exc)
                    response = None
                if response is None or _retry(response):
                    job.outbox[:sent] = batch  # keep only what still matters
                    if self._give_up(job):
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                if response.is_error:
                    log.error(
                        "job %s: hub refused %d events: %s",
                        job.job_id,
                        len(batch),
                        response.text[:200],
                    )
                backoff = BACKOFF_MIN
                del job.outbox[:sent]
                if any(isinstance(line, ClientExit) for line in batch):
                    job.state = NodeJobState.FINISHED
                    return

    @staticmethod
    def _give_up(job: ClientJob) -> bool:
        if job.state is NodeJobState.EXITED and time.time() - job.started > GIVE_UP_SECONDS:
            log.error("job %s: could not deliver its final report; giving up", job.job_id)
            job.state = NodeJobState.FINISHED
            return True
        return False

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def _retry(response: httpx.Response) -> bool:
    return response.status_code >= 500 or response.status_code in _RETRY_STATUSES
