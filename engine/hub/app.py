"""The hub's FastAPI application: wiring, background rounds, and errors as one line.

``create_app`` does the start-up work that must succeed before the hub listens (token,
schema upgrade, default node); the lifespan adopts surviving exports, reconciles jobs
that were running, and runs three rounds: disk events to subscribers (4 a second),
progress to the database (``hub.progress_flush_seconds``) and the job watch (1 a second).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI

from engine.api.auth import load_or_create_token, require_bearer
from engine.api.errors import install_error_handlers
from engine.config import Settings, ensure_dirs, get_settings
from engine.contract.hub import Health, errors
from engine.db.session import session_scope, upgrade
from engine.hub import routes_backups, routes_console, routes_vcenters
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportManager
from engine.hub.jobs import JobManager
from engine.hub.nodes import ensure_default_node
from engine.version import __version__

log = logging.getLogger("sendense.hub")

SSE_INTERVAL = 0.25
WATCH_INTERVAL = 1.0


async def _every(seconds: float, work: Callable[[], Any], name: str) -> None:
    """Run ``work`` in a thread every ``seconds``; a failing round is logged, not fatal."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await anyio.to_thread.run_sync(work)
        except Exception:
            log.exception("hub round %s failed", name)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    ensure_dirs(settings)
    token = load_or_create_token(settings.token_path)
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        ensure_default_node(session, settings)
    bus = EventBus()
    exports = ExportManager.from_settings(settings)
    jobs = JobManager(settings, exports, bus, token)

    def publish_disks() -> None:
        for event in jobs.disk_events():
            bus.publish(event)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus.bind(asyncio.get_running_loop())
        for note in await anyio.to_thread.run_sync(jobs.reconcile):
            log.info("reconcile: %s", note)
        tasks = [
            asyncio.create_task(_every(SSE_INTERVAL, publish_disks, "events")),
            asyncio.create_task(
                _every(settings.hub.progress_flush_seconds, jobs.flush_progress, "flush")
            ),
            asyncio.create_task(_every(WATCH_INTERVAL, jobs.watch, "watch")),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            await anyio.to_thread.run_sync(jobs.flush_progress)
            jobs.shutdown()

    app = FastAPI(
        title="Sendense hub",
        version=__version__,
        lifespan=lifespan,
        description="The hub (SHA) API. Every route but /api/v1/health needs a bearer token.",
    )
    app.state.settings = settings
    app.state.jobs = jobs
    app.state.bus = bus
    app.state.exports = exports
    app.state.token = token

    install_error_handlers(app, service="hub")

    public = APIRouter(prefix="/api/v1")

    @public.get("/health")
    def health() -> Health:
        return Health(version=__version__)

    app.include_router(public)
    guarded = [Depends(require_bearer(token))]
    for routes in (routes_backups, routes_vcenters, routes_console):
        app.include_router(routes.router, dependencies=guarded, responses=errors(401))
    return app
