"""VM restore routes: ``POST /restores/vm`` and the node's ``POST /restores/{id}/events``.

A VM restore answers 202 with its pending job once every check passed (point, recorded
configuration, name, placement): vCenter makes the VM and a node writes its disks after
the answer, and the job's events tell how that goes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from engine.contract.fields import JobId
from engine.contract.hub import errors
from engine.contract.progress import ProgressBatch, ProgressLine
from engine.contract.restore import RestoreJob, VMRestoreRequest
from engine.hub.routes_restores import restores

router = APIRouter(prefix="/api/v1")

RestoreId = Annotated[JobId, Path(description="the restore job's restore_id")]


@router.post("/restores/vm", status_code=202, responses=errors(404, 409, 422, 502, 503))
def restore_vm(body: VMRestoreRequest, request: Request) -> RestoreJob:
    """Recreate the point's VM in vCenter and have a node write its disks."""
    return restores(request).restore_vm(body)


@router.post(
    "/restores/{restore_id}/events",
    status_code=204,
    response_class=Response,
    responses=errors(404, 422),
)
def restore_events(
    restore_id: RestoreId, request: Request, body: ProgressBatch | ProgressLine
) -> Response:
    """A node's report on a VM restore: one progress line, or ``{"events": [...]}``."""
    lines = body.events if isinstance(body, ProgressBatch) else [body]
    restores(request).ingest(restore_id, lines)
    return Response(status_code=204)
