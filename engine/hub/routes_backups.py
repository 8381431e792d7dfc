"""Backup routes: the seed's ``POST /api/v1/backups``, job views, cancel, node reports, SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field
from sqlalchemy import select

from engine.db.models import BackupJob
from engine.errors import BadInput, NotFound
from engine.hub.events import EventBus
from engine.hub.jobs import JobManager

router = APIRouter(prefix="/api/v1")


class BackupRequest(BaseModel):
    """The seed's request; ``repository_id`` may be a number or a numeric string ("1")."""

    vm_name: str = Field(min_length=1, max_length=255)
    repository_id: int = Field(ge=1)
    backup_type: str = Field("full", min_length=1, max_length=32)
    # Addition to the seed: limit each disk's copy to this many MiB/s.
    max_rate_mib: float | None = Field(None, gt=0)


class DiskResult(BaseModel):
    disk_id: int
    nbd_port: int
    nbd_export_name: str
    qcow2_path: str
    qemu_nbd_pid: int
    status: str


class BackupResponse(BaseModel):
    backup_id: str
    vm_context_id: str
    vm_name: str
    disk_results: list[DiskResult]
    nbd_targets_string: str
    status: str


def jobs(request: Request) -> JobManager:
    manager: JobManager = request.app.state.jobs
    return manager


@router.post("/backups", response_model=BackupResponse, status_code=200)
def start_backup(body: BackupRequest, request: Request) -> dict[str, Any]:
    return jobs(request).start(
        body.vm_name, body.repository_id, body.backup_type, max_rate_mib=body.max_rate_mib
    )


@router.get("/backups")
def list_backups(
    request: Request,
    vm_name: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    manager = jobs(request)
    with manager.session() as s:
        query = select(BackupJob).order_by(BackupJob.created_at.desc(), BackupJob.id.desc())
        if vm_name:
            query = query.where(BackupJob.vm_name == vm_name)
        if status:
            query = query.where(BackupJob.status == status)
        return [manager.view(s, row) for row in s.scalars(query.limit(limit))]


@router.get("/backups/{backup_id}")
def get_backup(backup_id: str, request: Request) -> dict[str, Any]:
    return jobs(request).get(backup_id)


@router.delete("/backups/{backup_id}")
def cancel_backup(backup_id: str, request: Request) -> dict[str, Any]:
    return jobs(request).cancel(backup_id)


@router.get("/backups/{backup_id}/log")
def backup_log(
    backup_id: str, request: Request, lines: Annotated[int, Query(ge=1, le=5000)] = 100
) -> dict[str, list[str]]:
    return {"lines": jobs(request).node_log(backup_id, lines)}


@router.post("/backups/{backup_id}/events", status_code=204)
def node_events(
    backup_id: str,
    request: Request,
    body: Annotated[dict[str, Any], Body()],
) -> Response:
    """A node's report: one progress line, or ``{"events": [...]}``."""
    lines = body.get("events", [body])
    if not isinstance(lines, list) or not all(isinstance(x, dict) for x in lines):
        raise BadInput("events must be a list of progress-line objects")
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
