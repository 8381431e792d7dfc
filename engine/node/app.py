"""The node's FastAPI application: the seed's ``POST /api/v1/backup/start`` and friends.

Requests are authenticated with the same bearer token the node presents to its hub
(``node.hub_token``, else the data folder's token file).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from pydantic import BaseModel, Field, SecretStr

from engine.api.auth import node_token, require_bearer
from engine.api.errors import install_error_handlers
from engine.config import Settings, ensure_dirs, get_settings
from engine.node.runner import JobRunner, StartRequest
from engine.version import __version__

log = logging.getLogger("sendense.node")


class StartBody(BaseModel):
    """The seed's SNA request, plus the vCenter's pinned thumbprint."""

    vm_name: str = Field(min_length=1, max_length=255)
    vcenter_host: str = Field(min_length=1, max_length=255)
    vcenter_user: str = Field(min_length=1, max_length=255)
    vcenter_password: SecretStr
    vm_path: str = Field(min_length=1, max_length=1024)
    nbd_host: str = "127.0.0.1"
    nbd_targets: str = Field(min_length=1)
    job_id: str = Field(min_length=1, max_length=191, pattern=r"^[^/\x00]+$")
    backup_type: str = "full"
    vcenter_thumbprint: str | None = None
    # Addition: limit each disk's copy to this many MiB/s (the client's --max-rate).
    max_rate_mib: float | None = Field(None, gt=0)


def tunnel_status(settings: Settings) -> dict[str, Any] | None:
    """The tunnel's status file as the node's health reports it (None: no tunnel)."""
    try:
        from engine.node.tunnel import read_status
    except ImportError:
        return None
    status = read_status(settings)
    if status is None:
        return None
    if hasattr(status, "to_dict"):
        return dict(status.to_dict())
    if dataclasses.is_dataclass(status) and not isinstance(status, type):
        return dataclasses.asdict(status)
    return dict(status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    ensure_dirs(settings)
    token = node_token(settings)
    runner = JobRunner(settings, token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await runner.shutdown()

    app = FastAPI(title="Sendense node", version=__version__, lifespan=lifespan)
    app.state.runner = runner

    install_error_handlers(app)

    public = APIRouter(prefix="/api/v1")

    @public.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "service": "node",
            "version": __version__,
            "name": settings.node.name,
            "hub_url": settings.node.hub_url,
            "jobs_running": runner.running(),
            "tunnel": tunnel_status(settings),
        }

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_bearer(token))])

    @api.post("/backup/start", status_code=202)
    async def start(body: StartBody) -> dict[str, Any]:
        req = StartRequest(
            **body.model_dump(exclude={"vcenter_password"}),
            vcenter_password=body.vcenter_password.get_secret_value(),
        )
        job = await runner.start(req)
        return {"job_id": job.job_id, "pid": job.proc.pid, "status": "started"}

    @api.get("/backup/{job_id}")
    async def status(
        job_id: str, lines: Annotated[int, Query(ge=1, le=5000)] = 50
    ) -> dict[str, Any]:
        return runner.get(job_id).view(lines)

    @api.delete("/backup/{job_id}", status_code=202)
    async def cancel(job_id: str) -> dict[str, Any]:
        job = await runner.cancel(job_id)
        return {"job_id": job.job_id, "state": job.state, "cancel_requested": True}

    @api.get("/backups")
    async def jobs() -> list[dict[str, Any]]:
        return [job.view(0) for job in runner.jobs.values()]

    app.include_router(public)
    app.include_router(api)
    return app
