"""Restore routes: restore points, instant exports, disk restores, and restore jobs.

``POST /restores/vm`` and the node's ``POST /restores/{id}/events`` are in
routes_restore_vm.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from engine.contract.fields import JobId
from engine.contract.hub import errors
from engine.contract.restore import (
    DiskRestoreRequest,
    ExportRequest,
    MergeResult,
    RestoreExport,
    RestoreJob,
    RestorePoint,
    RestorePointQuery,
    RestoreQuery,
)
from engine.hub.restores.manager import RestoreManager
from engine.hub.restores.merge import ChainMerges

router = APIRouter(prefix="/api/v1")

PointId = Annotated[JobId, Path(description="the point's id: its backup's backup_id")]
RestoreId = Annotated[JobId, Path(description="the restore job's restore_id")]
ExportName = Annotated[JobId, Path(description="the instant export's name")]


def restores(request: Request) -> RestoreManager:
    manager: RestoreManager = request.app.state.restores
    return manager


# ---- restore points -------------------------------------------------------------------


@router.get("/restore-points", responses=errors(422))
def list_points(
    request: Request, query: Annotated[RestorePointQuery, Query()]
) -> list[RestorePoint]:
    """Completed backups, newest first; ``vm`` is a VM's name or its inventory path."""
    return restores(request).points(query)


@router.get("/restore-points/{point_id}", responses=errors(404, 422))
def get_point(point_id: PointId, request: Request) -> RestorePoint:
    return restores(request).point(point_id)


@router.delete(
    "/restore-points/{point_id}",
    status_code=204,
    response_class=Response,
    responses=errors(404, 409, 422),
)
def delete_point(point_id: PointId, request: Request) -> Response:
    """Remove a point's files; 409 while it is exported, restored, or a chain's base."""
    restores(request).delete_point(point_id)
    return Response(status_code=204)


@router.post("/restore-points/{point_id}/merge", responses=errors(404, 409, 422))
def merge_point(point_id: PointId, request: Request) -> MergeResult:
    """Fold the point into its one child (a synthetic full when the point is the chain's
    full); 409 while the point or a later one is read, or a backup of the VM runs."""
    chains: ChainMerges = request.app.state.chains
    return chains.merge(point_id)


# ---- instant exports ------------------------------------------------------------------


@router.post(
    "/restore-points/{point_id}/exports",
    status_code=201,
    responses=errors(404, 422, 503),
)
def export_point(point_id: PointId, body: ExportRequest, request: Request) -> RestoreExport:
    """Serve one disk of the point read-only over NBD until its TTL runs out (exported
    already: the same export, its TTL extended)."""
    return restores(request).export(point_id, body)


@router.get("/restore-exports")
def list_exports(request: Request) -> list[RestoreExport]:
    return restores(request).instant_exports()


@router.delete(
    "/restore-exports/{name}",
    status_code=204,
    response_class=Response,
    responses=errors(404, 422),
)
def unexport(name: ExportName, request: Request) -> Response:
    restores(request).unexport(name)
    return Response(status_code=204)


# ---- restore jobs ---------------------------------------------------------------------


@router.post("/restores/disk", status_code=202, responses=errors(404, 409, 422, 507))
def restore_disk(body: DiskRestoreRequest, request: Request) -> RestoreJob:
    """Write one disk of a point into a standalone image file on the hub's machine."""
    return restores(request).restore_disk(body)


@router.get("/restores", responses=errors(422))
def list_restores(request: Request, query: Annotated[RestoreQuery, Query()]) -> list[RestoreJob]:
    """Restore jobs newest first."""
    return restores(request).restores(query)


@router.get("/restores/{restore_id}", responses=errors(404, 422))
def get_restore(restore_id: RestoreId, request: Request) -> RestoreJob:
    return restores(request).restore(restore_id)


@router.delete("/restores/{restore_id}", responses=errors(404, 409, 422))
def cancel_restore(restore_id: RestoreId, request: Request) -> RestoreJob:
    """Cancel a running restore; answers once it ended (or after a while)."""
    return restores(request).cancel(restore_id)
