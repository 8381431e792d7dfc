"""What the console needs besides backups, vCenters and nodes: repositories, VM contexts."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.contract.hub import Repository, RepositoryIn, VMContext, VMIn, errors
from engine.db.models import BackupJob, VMReplicationContext
from engine.db.session import session_scope
from engine.errors import BadInput, NotFound
from engine.hub.routes_vcenters import connect, credentials, settings_of
from engine.hub.views import context_view, repository_view
from engine.repository import add_repository, list_repositories

router = APIRouter(prefix="/api/v1")

ContextId = Annotated[str, Path(min_length=1, max_length=191, description="a VM context id")]

# ---- repositories -------------------------------------------------------------------


@router.get("/repositories")
def repositories(request: Request) -> list[Repository]:
    with session_scope(settings_of(request).db_url) as s:
        return [repository_view(r) for r in list_repositories(s)]


@router.post("/repositories", status_code=201, responses=errors(422))
def add_repo(body: RepositoryIn, request: Request) -> Repository:
    path = FsPath(body.path)
    if not path.is_absolute():  # relative to the hub's working folder means nothing here
        raise BadInput(f"repository path {body.path!r} must be absolute")
    settings = settings_of(request)
    with session_scope(settings.db_url) as s:
        return repository_view(add_repository(s, body.name, path, settings))


# ---- VM contexts ----------------------------------------------------------------------


def _context_views(s: Session, contexts: list[VMReplicationContext]) -> list[VMContext]:
    out = []
    for ctx in contexts:
        last = list(
            s.scalars(
                select(BackupJob)
                .where(BackupJob.vm_context_id == ctx.context_id)
                .order_by(BackupJob.created_at.desc())
                .limit(5)
            )
        )
        out.append(context_view(ctx, last))
    return out


@router.get("/vms")
def vms(request: Request) -> list[VMContext]:
    with session_scope(settings_of(request).db_url) as s:
        rows = list(s.scalars(select(VMReplicationContext).order_by(VMReplicationContext.vm_name)))
        return _context_views(s, rows)


@router.post("/vms", responses=errors(404, 422, 502))
def add_vm(body: VMIn, request: Request) -> VMContext:
    """Add a VM by inventory path, or refresh its context (disks, power, CBT)."""
    from engine.vcenter import find_vm, vm_info
    from engine.vcenter.contexts import upsert_context

    creds = credentials(request, body.vcenter_id)
    with connect(creds) as vc:
        info = vm_info(vc, find_vm(vc, body.path))
    with session_scope(settings_of(request).db_url) as s:
        ctx = upsert_context(s, info, credential_id=creds.id, vcenter_host=creds.vcenter_host)
        s.flush()
        return _context_views(s, [ctx])[0]


@router.post("/vms/{context_id}/cbt", responses=errors(404, 409, 422, 502))
def enable_cbt(context_id: ContextId, request: Request) -> VMContext:
    """Turn CBT on for the context's VM (a no-op when it is on), then refresh the context."""
    from engine.hub.jobs.refresh import refresh_context

    settings = settings_of(request)
    with session_scope(settings.db_url) as s:
        ctx = s.get(VMReplicationContext, context_id)
        if ctx is None:
            raise NotFound(f"VM context {context_id!r} does not exist")
        ctx = refresh_context(s, settings.key_path, ctx, enable_cbt=True)
        return _context_views(s, [ctx])[0]
