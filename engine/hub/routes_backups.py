"""Backup routes: the seed's ``POST /api/v1/backups``, the queue, job views, cancel, node
reports, SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from engine.contract.fields import JobId
from engine.contract.hub import (
    BackupPreview,
    BackupQuery,
    BackupRequest,
    BackupStarted,
    Job,
    JobLog,
    QueueRequest,
    errors,
)
from engine.contract.progress import ProgressBatch, ProgressLine
from engine.errors import NotFound
from engine.hub.events import EventBus
from engine.hub.jobs import JobManager
from engine.hub.queue.dispatcher import Dispatcher

router = APIRouter(prefix="/api/v1")

BackupId = Annotated[JobId, Path(description="the job's backup_id")]


def jobs(request: Request) -> JobManager:
    manager: JobManager = request.app.state.jobs
    return manager


@router.post("/backups", responses=errors(404, 409, 422, 502, 503))
def start_backup(body: BackupRequest, request: Request) -> BackupStarted:
    return jobs(request).start(body)


@router.post("/backups/queue", responses=errors(404, 409, 422))
def queue_backups(body: QueueRequest, request: Request) -> list[Job]:
    """Queue one job per backup, all or none (a VM queued or running already is a 409,
    a VM twice a 422); the hub starts them as its limits allow. The queued jobs."""
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher.queue(body)


@router.post("/backups/preview", responses=errors(404, 409, 422, 502))
def preview_backup(body: BackupRequest, request: Request) -> BackupPreview:
    """What ``POST /backups`` would do with this body, disk by disk, and why."""
    return jobs(request).preview(body)


@router.get("/backups", responses=errors(422))
def list_backups(request: Request, query: Annotated[BackupQuery, Query()]) -> list[Job]:
    """Newest first; ``status=queued`` lists the queue in its order (first in line first)."""
    return jobs(request).list_jobs(query)


@router.get("/backups/{backup_id}", responses=errors(404, 422))
def get_backup(backup_id: BackupId, request: Request) -> Job:
    return jobs(request).get(backup_id)


@router.delete("/backups/{backup_id}", responses=errors(404, 409, 422, 502, 503))
def cancel_backup(backup_id: BackupId, request: Request) -> Job:
    """A queued job is cancelled at once; a running one once its node stopped it."""
    return jobs(request).cancel(backup_id)


@router.get("/backups/{backup_id}/log", responses=errors(404, 422, 502, 503))
def backup_log(
    backup_id: BackupId, request: Request, lines: Annotated[int, Query(ge=1, le=5000)] = 100
) -> JobLog:
    return JobLog(lines=jobs(request).node_log(backup_id, lines))


@router.post(
    "/backups/{backup_id}/events",
    status_code=204,
    response_class=Response,
    responses=errors(404, 422),
)
def node_events(
    backup_id: BackupId, request: Request, body: ProgressBatch | ProgressLine
) -> Response:
    """A node's report: one progress line, or ``{"events": [...]}``."""
    lines = body.events if isinstance(body, ProgressBatch) else [body]
    jobs(request).ingest(backup_id, lines)
    return Response(status_code=204)


@router.get("/events", response_class=EventSourceResponse)
async def events(request: Request) -> AsyncIterator[ServerSentEvent]:
    """Job and disk events as they happen; every running job is sent first."""
    manager = jobs(request)
    bus: EventBus = request.app.state.bus
    with bus.subscription() as queue:
        for backup_id in manager.active_ids():
            try:
                job = await anyio.to_thread.run_sync(manager.get, backup_id)
            except NotFound:  # it ended in between; its end event is queued
                continue
            yield ServerSentEvent(event="job", data=job)
        while True:
            event = await queue.get()
            yield ServerSentEvent(event=event.kind, data=event.data)
