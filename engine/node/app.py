"""The node's FastAPI application: the seed's ``POST /api/v1/backup/start`` and friends.

Requests and answers are the contract's node models, so ``/openapi.json`` describes what
is sent. Requests are authenticated with the same bearer token the node presents to its
hub (``node.hub_token``, else the data folder's token file).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query

from engine.api.auth import node_token, require_bearer
from engine.api.errors import install_error_handlers
from engine.config import Settings, ensure_dirs, get_settings
from engine.contract.hub import errors
from engine.contract.node import (
    CancelAnswer,
    NodeHealth,
    NodeJob,
    RestoreStartRequest,
    StartAnswer,
    StartRequest,
)
from engine.node.runner import JobRunner
from engine.node.tunnel.status import read_status
from engine.version import __version__


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

    install_error_handlers(app, service="node")

    public = APIRouter(prefix="/api/v1")

    @public.get("/health", response_model=NodeHealth)
    def health() -> NodeHealth:
        return NodeHealth(
            version=__version__,
            name=settings.node.name,
            hub_url=settings.node.hub_url,
            jobs_running=runner.running(),
            tunnel=read_status(settings),
        )

    api = APIRouter(
        prefix="/api/v1", dependencies=[Depends(require_bearer(token))], responses=errors(401)
    )

    @api.post(
        "/backup/start",
        status_code=202,
        response_model=StartAnswer,
        responses=errors(409, 422),
    )
    async def start(body: StartRequest) -> StartAnswer:
        job = await runner.start(body)
        return StartAnswer(job_id=job.job_id, pid=job.proc.pid)

    @api.post(
        "/restores",
        status_code=202,
        response_model=StartAnswer,
        responses=errors(409, 422),
    )
    async def start_restore(body: RestoreStartRequest) -> StartAnswer:
        """Write a restored VM's disks; the job is then followed, read and cancelled
        through the same ``/backup/{job_id}`` routes as a backup."""
        job = await runner.start(body)
        return StartAnswer(job_id=job.job_id, pid=job.proc.pid)

    @api.get("/backup/{job_id}", response_model=NodeJob, responses=errors(404, 422))
    async def status(job_id: str, lines: Annotated[int, Query(ge=1, le=5000)] = 50) -> NodeJob:
        return runner.get(job_id).view(lines)

    @api.delete(
        "/backup/{job_id}", status_code=202, response_model=CancelAnswer, responses=errors(404, 409)
    )
    async def cancel(job_id: str) -> CancelAnswer:
        job = await runner.cancel(job_id)
        return CancelAnswer(job_id=job.job_id, state=job.state)

    @api.get("/backups", response_model=list[NodeJob])
    async def jobs() -> list[NodeJob]:
        return [job.view() for job in runner.jobs.values()]

    app.include_router(public)
    app.include_router(api)
    return app
