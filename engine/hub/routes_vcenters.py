"""vCenter routes: stored logins, the certificate probe, the login test, the inventory.

vCenter calls (pyvmomi, blocking) run in the request's worker thread; inventories are
cached for ``INVENTORY_TTL`` seconds so a console browsing the tree does not log in to
vCenter on every keystroke. No answer ever carries a password.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Query, Request

from engine.config import Settings
from engine.contract.fields import MAX_ID, Host, split_host
from engine.contract.hub import Probe, VCenter, VCenterIn, VCenterTest, errors
from engine.contract.inventory import Inventory
from engine.credentials import CredentialNotFound, Credentials, VMwareCredentialService
from engine.db.session import session_scope
from engine.errors import BadInput, NotFound, SendenseError, VCenterError
from engine.hub.views import vcenter_view

if TYPE_CHECKING:
    from engine.vcenter import VCenter as VCenterSession

router = APIRouter(prefix="/api/v1")

INVENTORY_TTL = 30.0
_inventory_cache: dict[tuple[str, int], tuple[float, Inventory]] = {}
_inventory_lock = threading.Lock()

VCenterId = Annotated[int, Path(ge=1, le=MAX_ID)]


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def credentials(request: Request, vcenter_id: int) -> Credentials:
    settings = settings_of(request)
    with session_scope(settings.db_url) as s:
        try:
            return VMwareCredentialService(s, settings.key_path).get_credentials(vcenter_id)
        except CredentialNotFound:
            raise NotFound(f"vCenter {vcenter_id} does not exist") from None


def connect(creds: Credentials) -> VCenterSession:
    from engine.vcenter import connect as vcenter_connect

    if not creds.thumbprint:
        raise BadInput(
            f"vCenter {creds.id} has no pinned thumbprint: add it again with one (or trust=true)"
        )
    return vcenter_connect(
        creds.vcenter_host, creds.username, creds.password, thumbprint=creds.thumbprint
    )


def _probe(host: str) -> str:
    """The thumbprint of the certificate at ``host``; one answer for every way there is
    none (closed, silent, plain HTTP), so the hub is no port scanner."""
    from engine.vcenter import fetch_thumbprint

    try:
        return fetch_thumbprint(*split_host(host))
    except VCenterError:
        raise VCenterError(f"no vCenter with a certificate answers at {host}") from None


@router.get("/vcenters")
def vcenters(request: Request) -> list[VCenter]:
    settings = settings_of(request)
    with session_scope(settings.db_url) as s:
        return [vcenter_view(r) for r in VMwareCredentialService(s, settings.key_path).list()]


@router.get("/vcenters/probe", responses=errors(422, 502))
def probe(host: Annotated[Host, Query()]) -> Probe:
    return Probe(thumbprint=_probe(host))


@router.post("/vcenters", status_code=201, responses=errors(422, 502))
def add_vcenter(body: VCenterIn, request: Request) -> VCenter:
    """Store a login: with the thumbprint given, or (``trust``) the one the server shows
    now; logged in once first unless ``verify`` is false."""
    thumbprint = body.thumbprint
    if thumbprint is None:
        if not body.trust:
            raise BadInput("give the vCenter's thumbprint, or trust=true to pin the one it shows")
        thumbprint = _probe(body.host)
    password = body.password.get_secret_value()
    if body.verify:
        from engine.vcenter import connect as vcenter_connect

        vcenter_connect(body.host, body.username, password, thumbprint=thumbprint).close()
    settings = settings_of(request)
    with session_scope(settings.db_url) as s:
        row = VMwareCredentialService(s, settings.key_path).add(
            host=body.host,
            username=body.username,
            password=password,
            thumbprint=thumbprint,
            name=body.name,
        )
        return vcenter_view(row)


@router.post("/vcenters/{vcenter_id}/test", responses=errors(404, 422))
def test_vcenter(vcenter_id: VCenterId, request: Request) -> VCenterTest:
    creds = credentials(request, vcenter_id)
    try:
        connect(creds).close()
    except SendenseError as exc:  # a failed login is the answer, not an error
        return VCenterTest(ok=False, message=str(exc))
    return VCenterTest(ok=True, message=f"logged in to {creds.vcenter_host} as {creds.username}")


@router.get("/vcenters/{vcenter_id}/inventory", responses=errors(404, 422, 502))
def inventory(vcenter_id: VCenterId, request: Request, refresh: bool = False) -> Inventory:
    from engine.vcenter import get_inventory

    key = (settings_of(request).db_url, vcenter_id)
    with _inventory_lock:
        cached = _inventory_cache.get(key)
    if cached and not refresh and time.monotonic() - cached[0] < INVENTORY_TTL:
        return cached[1]
    with connect(credentials(request, vcenter_id)) as vc:
        found = get_inventory(vc)
    with _inventory_lock:
        _inventory_cache[key] = (time.monotonic(), found)
    return found
