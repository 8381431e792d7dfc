"""The hub's FastAPI application: wiring, background rounds, and errors as one line.

``create_app`` does the start-up work that must succeed before the hub listens (token,
schema upgrade, default node); the lifespan adopts surviving exports, reconciles jobs
that were running (backups', then restores'), and runs three rounds, for backups and for
restores alike: events to subscribers (4 a second), progress to the database
(``hub.progress_flush_seconds``) and the watch (1 a second; for restores: the instant
exports' TTL); and the unattended ones: the nodes' heartbeat, the queue's dispatch and
the policies' scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI

from engine import clock
from engine.api.auth import load_or_create_token, require_bearer
from engine.api.errors import install_error_handlers
from engine.config import Settings, ensure_dirs, get_settings
from engine.contract.hub import Health, errors
from engine.db.session import session_scope, upgrade
from engine.hub import (
    routes_backups,
    routes_console,
    routes_files,
    routes_nodes,
    routes_policies,
    routes_restore_vm,
    routes_restores,
    routes_retention,
    routes_vcenters,
    routes_verify,
)
from engine.hub.events import EventBus
from engine.hub.exports.manager import ExportManager
from engine.hub.files.service import FileService
from engine.hub.fleet import NodeWatch
from engine.hub.jobs import JobManager
from engine.hub.nodes import ensure_default_node
from engine.hub.policies.notify import Notifier
from engine.hub.policies.retention import RetentionService
from engine.hub.policies.service import PolicyService
from engine.hub.queue.dispatcher import Dispatcher
from engine.hub.restores.manager import RestoreManager
from engine.hub.restores.merge import ChainMerges, Merging, Readers
from engine.hub.verify.manager import VerifyManager
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
    if settings.hub.clock_file is not None:
        clock.install(clock.FileClock(settings.hub.clock_file))
    ensure_dirs(settings)
    token = load_or_create_token(settings.token_path)
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        ensure_default_node(session, settings)
    bus = EventBus()
    exports = ExportManager.from_settings(settings)
    fleet = NodeWatch(settings, token)
    jobs = JobManager(settings, exports, bus, token, fleet)
    merging = Merging()  # the points a merge works on: every reader's start refuses them
    verify = VerifyManager(settings, refuse=merging.refuse)
    restores = RestoreManager(
        settings, exports, bus, token, verifying=verify.busy_points, merging=merging
    )
    files = FileService(settings, restores.point, refuse=merging.refuse)
    readers = Readers(
        restores.store.busy_points,
        verify.busy_points,
        files.sessions.close_points,
        jobs.ctx.live.claim,
    )
    chains = ChainMerges(settings, merging, readers)
    dispatcher = Dispatcher(settings, jobs, fleet)
    retention = RetentionService(settings, chains, restores, readers)
    policies = PolicyService(settings, dispatcher, retention, Notifier())

    def publish_disks() -> None:
        for event in jobs.disk_events():
            bus.publish(event)

    def flush() -> None:
        jobs.flush_progress()
        restores.flush()

    def reconcile() -> list[str]:
        # Exports outlive the hub; the backups' reconcile spares the restores' own,
        # which the restores then decide about (a lease run out, a restore that died).
        return jobs.reconcile(spare=restores.export_names()) + restores.reconcile()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus.bind(asyncio.get_running_loop())
        for note in await anyio.to_thread.run_sync(reconcile):
            log.info("reconcile: %s", note)
        flush_seconds = settings.hub.progress_flush_seconds
        rounds: list[tuple[float, Callable[[], Any], str]] = [
            (SSE_INTERVAL, publish_disks, "events"),
            (SSE_INTERVAL, restores.publish_changed, "restore events"),
            (flush_seconds, jobs.flush_progress, "flush"),
            (flush_seconds, restores.flush, "restore flush"),
            (WATCH_INTERVAL, jobs.watch, "watch"),
            (WATCH_INTERVAL, restores.watch, "restore watch"),
            (WATCH_INTERVAL, files.sweep, "file sessions"),
            (settings.fleet.heartbeat_seconds, fleet.beat, "heartbeat"),
            (settings.queue.dispatch_seconds, dispatcher.round, "dispatch"),
            (settings.scheduler.tick_seconds, policies.fire, "scheduler"),
            (settings.scheduler.tick_seconds, policies.finish, "policy runs"),
        ]
        tasks = [asyncio.create_task(_every(*r)) for r in rounds]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            await anyio.to_thread.run_sync(restores.shutdown)
            await anyio.to_thread.run_sync(files.close_all)
            await anyio.to_thread.run_sync(verify.shutdown)
            await anyio.to_thread.run_sync(flush)
            jobs.shutdown()

    app = FastAPI(
        title="Sendense hub",
        version=__version__,
        lifespan=lifespan,
        description="The hub (SHA) API. Every route but /api/v1/health needs a bearer token.",
    )
    app.state.settings = settings
    app.state.jobs = jobs
    app.state.restores = restores
    app.state.files = files
    app.state.verify = verify
    app.state.chains = chains
    app.state.fleet = fleet
    app.state.dispatcher = dispatcher
    app.state.retention = retention
    app.state.policies = policies
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
    for routes in (
        routes_backups,
        routes_vcenters,
        routes_console,
        routes_restores,
        routes_restore_vm,
        routes_verify,
        routes_files,
        routes_nodes,
        routes_policies,
        routes_retention,
    ):
        app.include_router(routes.router, dependencies=guarded, responses=errors(401))
    return app
