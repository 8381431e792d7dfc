"""What the console needs besides backups: repositories, vCenters, VM contexts, nodes.

vCenter calls (pyvmomi, blocking) run in the request's worker thread; inventories are
cached for ``INVENTORY_TTL`` seconds so a console browsing the tree does not log in to
vCenter on every keystroke. No answer ever carries a password.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from engine.config import Settings
from engine.contract.fields import normalise_thumbprint
from engine.credentials import Credentials, VMwareCredentialService
from engine.db.models import BackupJob, VMReplicationContext
from engine.db.session import session_scope
from engine.errors import BadInput, NotFound, SendenseError
from engine.hub.nodes import NodeClient, NodeRef, list_nodes
from engine.hub.views import context_view
from engine.repository import add_repository, list_repositories, usage

router = APIRouter(prefix="/api/v1")

INVENTORY_TTL = 30.0
_inventory_cache: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}
_inventory_lock = threading.Lock()


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# ---- repositories -------------------------------------------------------------------


class RepositoryIn(BaseModel):
    name: str = Field(min_length=1, max_length=191)
    path: str = Field(min_length=1, max_length=1024)


def _repo_view(repo: Any) -> dict[str, Any]:
    out = {"id": repo.id, "name": repo.name, "path": repo.path, "enabled": repo.enabled}
    try:
        u = usage(Path(repo.path))
        out |= {
            "used_bytes": u.used_bytes,
            "free_bytes": u.free_bytes,
            "total_bytes": u.total_bytes,
        }
    except OSError as exc:
        out |= {"used_bytes": None, "free_bytes": None, "total_bytes": None, "error": str(exc)}
    return out


@router.get("/repositories")
def repositories(request: Request) -> list[dict[str, Any]]:
    with session_scope(_settings(request).db_url) as s:
        return [_repo_view(r) for r in list_repositories(s)]


@router.post("/repositories", status_code=201)
def add_repo(body: RepositoryIn, request: Request) -> dict[str, Any]:
    with session_scope(_settings(request).db_url) as s:
        return _repo_view(add_repository(s, body.name, Path(body.path)))


# ---- vCenters -----------------------------------------------------------------------


class VCenterIn(BaseModel):
    host: str = Field(min_length=1, max_length=255)
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, repr=False)
    thumbprint: str | None = None
    name: str | None = None
    # With no thumbprint: trust the one the server shows now (trust on first use).
    trust: bool = False


def _vcenter_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.credential_name,
        "host": row.vcenter_host,
        "username": row.username,
        "thumbprint": row.thumbprint,
    }


def _credentials(request: Request, credential_id: int) -> Credentials:
    from engine.credentials import CredentialError

    settings = _settings(request)
    with session_scope(settings.db_url) as s:
        try:
            return VMwareCredentialService(s, settings.key_path).get_credentials(credential_id)
        except CredentialError as exc:
            if "does not exist" in str(exc):
                raise NotFound(f"vCenter {credential_id} does not exist") from None
            raise


def _connect(creds: Credentials) -> Any:
    from engine.vcenter.connection import connect

    if not creds.thumbprint:
        raise BadInput(
            f"vCenter {creds.id} has no pinned thumbprint: add it again with one (or trust=true)"
        )
    return connect(creds.vcenter_host, creds.username, creds.password, thumbprint=creds.thumbprint)


def _probe(host: str) -> str:
    from engine.vcenter.connection import fetch_thumbprint, split_host

    name, port = split_host(host)
    return fetch_thumbprint(name, port)


@router.get("/vcenters")
def vcenters(request: Request) -> list[dict[str, Any]]:
    settings = _settings(request)
    with session_scope(settings.db_url) as s:
        return [_vcenter_view(r) for r in VMwareCredentialService(s, settings.key_path).list()]


@router.get("/vcenters/probe")
def probe(host: Annotated[str, Query(min_length=1)]) -> dict[str, str]:
    return {"thumbprint": _probe(host)}


@router.post("/vcenters", status_code=201)
def add_vcenter(body: VCenterIn, request: Request) -> dict[str, Any]:
    thumbprint = normalise_thumbprint(body.thumbprint) if body.thumbprint else None
    if thumbprint is None:
        if not body.trust:
            raise BadInput("give the vCenter's thumbprint, or trust=true to pin the one it shows")
        thumbprint = _probe(body.host)
    settings = _settings(request)
    with session_scope(settings.db_url) as s:
        row = VMwareCredentialService(s, settings.key_path).add(
            host=body.host,
            username=body.username,
            password=body.password,
            thumbprint=thumbprint,
            name=body.name,
        )
        return _vcenter_view(row)


@router.post("/vcenters/{vcenter_id}/test")
def test_vcenter(vcenter_id: int, request: Request) -> dict[str, Any]:
    creds = _credentials(request, vcenter_id)
    try:
        _connect(creds).close()
    except SendenseError as exc:  # a failed login is the answer, not an error
        return {"ok": False, "message": str(exc)}
    return {"ok": True, "message": f"logged in to {creds.vcenter_host} as {creds.username}"}


@router.get("/vcenters/{vcenter_id}/inventory")
def inventory(vcenter_id: int, request: Request, refresh: bool = False) -> dict[str, Any]:
    from engine.vcenter import get_inventory

    key = (_settings(request).db_url, vcenter_id)
    with _inventory_lock:
        cached = _inventory_cache.get(key)
    if cached and not refresh and time.monotonic() - cached[0] < INVENTORY_TTL:
        return cached[1]
    creds = _credentials(request, vcenter_id)
    with _connect(creds) as vc:
        data: dict[str, Any] = get_inventory(vc).model_dump()
    with _inventory_lock:
        _inventory_cache[key] = (time.monotonic(), data)
    return data


# ---- VM contexts ----------------------------------------------------------------------


class VMIn(BaseModel):
    vcenter_id: int = Field(ge=1)
    path: str = Field(min_length=1, max_length=1024)


def _context_views(s: Any, contexts: list[VMReplicationContext]) -> list[dict[str, Any]]:
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
def vms(request: Request) -> list[dict[str, Any]]:
    with session_scope(_settings(request).db_url) as s:
        rows = list(s.scalars(select(VMReplicationContext).order_by(VMReplicationContext.vm_name)))
        return _context_views(s, rows)


@router.post("/vms")
def add_vm(body: VMIn, request: Request) -> dict[str, Any]:
    """Add a VM by inventory path, or refresh its context (disks, power, CBT)."""
    from engine.vcenter import find_vm, vm_info
    from engine.vcenter.contexts import upsert_context

    creds = _credentials(request, body.vcenter_id)
    with _connect(creds) as vc:
        info = vm_info(vc, find_vm(vc, body.path))
    with session_scope(_settings(request).db_url) as s:
        ctx = upsert_context(s, info, credential_id=creds.id, vcenter_host=creds.vcenter_host)
        s.flush()
        return _context_views(s, [ctx])[0]


# ---- nodes ---------------------------------------------------------------------------


@router.get("/nodes")
def nodes(request: Request) -> list[dict[str, Any]]:
    settings = _settings(request)
    token: str = request.app.state.token
    with session_scope(settings.db_url) as s:
        refs = [(NodeRef(n.id, n.name, n.url), n.enabled) for n in list_nodes(s)]
    out = []
    for ref, enabled in refs:
        entry: dict[str, Any] = {"id": ref.id, "name": ref.name, "url": ref.url, "enabled": enabled}
        try:
            health = NodeClient(ref, token).health()
            entry |= {
                "state": "up",
                "version": health.get("version"),
                "tunnel": health.get("tunnel"),
            }
            entry["jobs_running"] = health.get("jobs_running")
        except Exception as exc:
            entry |= {"state": "down", "tunnel": None, "error": str(exc)}
        out.append(entry)
    return out
